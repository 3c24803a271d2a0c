"""Upstream LLM providers: where a target's requests go and how they authenticate."""
