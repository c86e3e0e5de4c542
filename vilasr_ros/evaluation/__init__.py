"""Evaluation: benchmark and sim datasets through the loop (``runner``), scored as the authors'
``eval/evaluate.py`` (``scores``), compared in a Markdown report (``report``)."""
