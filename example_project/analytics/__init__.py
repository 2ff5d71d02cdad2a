"""Learning statistics: the aggregate-heavy read that caching is measured on."""
