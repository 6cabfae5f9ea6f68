"""The ``edgefleet`` command line: one module per command group, each thin.

Commands parse their arguments, call one service function and format the result;
errors derived from ``EdgefleetError`` print one clear message to stderr and exit 1.
"""
