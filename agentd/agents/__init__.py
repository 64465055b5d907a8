"""Agents: LangGraph graphs (ReAct, ReWOO, planner-search) that plan and call tools, served as models.

One module per graph; `runtime.py` owns agent execution: it picks the chat model from the
served models, runs a graph with persistence (one checkpoint namespace per agent type),
approval, limits and traces, and yields the typed steps (`steps.py`) that the graph's nodes
write to LangGraph's custom stream. May import `agentd.llm`, `tools` and `pipelines`; never
`agentd.server`.
"""
