"""Generic operators: filter on a column, sample, sort, head, mix sources, select and rename columns."""
