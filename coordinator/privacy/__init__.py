"""Privacy settings and accounting: DP math, the accountant, the ledger, the
budget, and what a metrics line may say."""
