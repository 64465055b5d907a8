"""agentd: the centre. The OpenAI-compatible server, agents, the chat-model layer, jobs, store.

May import every other top-level package; nothing imports it but `tools` (for `agentd.jobs`).
"""
