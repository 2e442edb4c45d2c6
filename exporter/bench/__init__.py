"""``tlx bench``: the only timer — harness, statistics, reports, regression gate."""
