"""ai-rate-limiting-advanced: token and cost budgets per consumer."""
