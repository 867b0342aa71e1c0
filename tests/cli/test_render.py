"""The terminal renderer: numbers as they can be given back to the options that read them."""

from mergelaw.cli.render import column_stat, fmt


def test_sizes_print_in_full_so_they_can_be_given_back():
    """A lab base of 139,584 parameters printed as 0.00014 was refused when given back as
    --size or in --base-costs (not a fitted size); printed in full it is accepted."""
    assert fmt(0.000139584, column_stat("n_b")) == "0.000139584"
    assert fmt(0.000139584, column_stat("k")) == "0.00014"


def test_counts_probabilities_and_never():
    assert fmt(3.0, "median") == "3" and fmt(float("inf"), "median") == "never"
    assert fmt(0.123456, "probability") == "0.12" and fmt(float("nan")) == ""
    assert fmt(12.34567) == "12.35" and fmt(0.0123456) == "0.0123"
