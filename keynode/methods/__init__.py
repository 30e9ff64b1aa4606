"""Agent methods, one module per domain, each installed on the agent by ``install(agent)``."""
