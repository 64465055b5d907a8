"""Deployments: served models (and their adapters) as managed resources on the embedded engine or vLLM.

A deployment is recorded in SQLite, launched in the background, followed through its events,
unloaded when undeployed or idle past its keep_alive, and brought back when the server restarts.
It may import `pipelines` and `agentd.store`; the HTTP routes live in `agentd.server.deployments`.
"""

from agentd.deployments.model import Deployment, DeploymentError, EngineName, Status, parse_keep_alive
from agentd.deployments.service import DeploymentService

__all__ = ["Deployment", "DeploymentError", "DeploymentService", "EngineName", "Status", "parse_keep_alive"]
