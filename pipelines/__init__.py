"""Model engines and inference pipelines.

Text generation engines (transformers on CPU, any OpenAI-compatible upstream), the model
registry and the embedded default model. A library: imports third-party packages only,
never `agentd`, `tools`, `training` or `evaluation`.
"""
