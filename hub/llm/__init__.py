"""The AI side: a model behind a small protocol, and the tool-calling loop."""
