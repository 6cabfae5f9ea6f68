"""Example models trained here from data that ships with scikit-learn.

``build_examples`` trains digit classifiers on ``sklearn.datasets.load_digits``, exports
them to ONNX with skl2onnx, quantizes an int8 variant with ONNX Runtime, measures them,
and writes bundles ready for ``edgefleet model register``. Needs the ``examples`` extra.
"""
