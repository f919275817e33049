"""Data validation with Great Expectations: the dataset contract checked as expectation suites.

Modules: :mod:`~avlops.validation.params` (the ``validation`` config section), :mod:`~avlops.validation.frames`
(the tables the suites check, built with pandas), :mod:`~avlops.validation.suites` (expectation suites derived from
the contract) and :mod:`~avlops.validation.run` (run, Data Docs, summary, quarantine, gate). Only the last two import
Great Expectations, so loading the config stays cheap.
"""
