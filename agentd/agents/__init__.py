"""Agents: LangGraph graphs (ReAct, ReWOO, planner-search) that plan and call tools, served as models.

One module per graph; `runtime.py` runs any of them with persistence, approval, limits and
traces; `steps.py` holds the typed steps every graph streams.
"""
