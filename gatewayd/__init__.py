"""gatewayd: Anthropic Messages API clients on Google Gemini, configured like Kong AI Gateway."""
