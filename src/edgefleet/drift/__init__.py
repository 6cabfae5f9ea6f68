"""Drift monitoring: are a model's inputs and outputs on the fleet still what it was built for?

Pure decision code, no I/O: ``sketch`` (mergeable quantile summaries that devices send),
``stats`` (drift statistics on bins and on summaries), ``errors`` (the feature's typed
errors). The device runtime imports ``edgefleet.drift.sketch`` alone, which needs numpy
only, so this package imports nothing at package level.
"""
