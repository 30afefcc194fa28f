"""Best-of-N's N chosen per budget on validation prompts (study/search_choice.py): the candidate
widths and the rule (highest validation success, the study's N on a tie). A pool of N_max
samples serving a smaller N: tests/test_search.py; the choice in a study: tests/test_study.py."""

from veriscale.study.search_choice import choose, widths


def test_widths_are_the_divisors_of_N_the_study_s_N_first():
    assert widths(4) == [4, 2, 1]
    assert widths(6) == [6, 3, 2, 1]
    assert widths(1) == [1]


def test_choice_takes_the_best_validation_success_and_the_study_s_N_on_a_tie():
    success = {4: {8: 0.30, 32: 0.6}, 2: {8: 0.50, 32: 0.6}, 1: {8: 0.50, 32: 0.2}}
    at8 = choose(success, 8)  # 2 and 1 tie above 4: the larger N first
    assert at8 == {"N": 2, "val_success": 0.5, "fixed_N": 4, "fixed_val_success": 0.3}
    assert choose(success, 32)["N"] == 4  # a tie with the study's N keeps it
