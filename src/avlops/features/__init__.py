"""The feature store (Feast): clip metadata and preprocessing statistics, offline (parquet) and online.

Modules: :mod:`~avlops.features.params` (the ``features`` config section), :mod:`~avlops.features.tables` (the
offline tables, built with pandas) and :mod:`~avlops.features.store` (Feast: definitions, store rendering,
materialization, online and point-in-time lookups). Only the last imports Feast (5-15 s), so loading the config
stays cheap.
"""
