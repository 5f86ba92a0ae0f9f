"""Serve: the trained Tamiyo (agent.pt) answering decisions over HTTP, and the client training jobs use."""
