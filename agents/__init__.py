"""The agents and the model backends they call."""
