"""Reusable widgets: charts, the confusion matrix, the hardware panel, the classifier pane."""
