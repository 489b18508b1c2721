"""The framework: the Analysis contract, parameters, the registry, errors and result-table helpers."""
