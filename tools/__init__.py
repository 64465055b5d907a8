"""The tool registry, the @tool decorator and built-in tools.

May import `pipelines`, `training`, `evaluation` and `agentd.jobs`; never the server.
"""
