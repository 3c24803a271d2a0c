"""ai-proxy-advanced: the Messages API on Gemini, with Kong's balancer and targets."""
