"""Data: Minari datasets on disk -> episodes -> transitions -> tokens (docs/method.md, Data).

store        find, open, list and describe datasets in Minari's local store
install      put datasets into the store (create from episodes, download), atomically
episodes     flat arrays over all steps of a dataset
transitions  rewards, values, termination penalty, training windows
weighting    action-loss weights (return-weighted)
tokens       per-dimension discretization
"""
