"""LangGraph graphs that wire the agents together."""
