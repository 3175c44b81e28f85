"""URSAMLib.settings: every parameter of a run is checked, with a message that names it."""
import pytest

from URSAMLib.errors import URSAMError
from URSAMLib.settings import Settings


def test_the_default_settings_are_valid_and_the_papers_best():
    settings = Settings().validate()
    assert (settings.num_aug, settings.ratio, settings.max_zoom) == (3, 0.01, 1.0)


@pytest.mark.parametrize("change, named", [
    ({"num_aug": 0}, "augmented prompts"), ({"num_aug": 65}, "augmented prompts"),
    ({"ratio": -0.1}, "ratio"), ({"ratio": 0.6}, "ratio"),
    ({"method": "majority"}, "rectification method"),
    ({"alpha_h": 0.5}, "alpha_h"),
    ({"prior_weight": -1}, "prior's weight"), ({"prior_weight": 100}, "prior's weight"),
    ({"max_zoom": 0.5}, "zoom"), ({"max_zoom": 32}, "zoom"),
    ({"lower_bound": "top"}, "lower bound"),
])
def test_each_parameter_out_of_range_is_a_user_error_that_names_it(change, named):
    with pytest.raises(URSAMError, match=named):
        Settings(**change).validate()


@pytest.mark.parametrize("change", [{"num_aug": 1}, {"num_aug": 64}, {"ratio": 0.0}, {"ratio": 0.5},
                                    {"max_zoom": 1.0}, {"max_zoom": 16}, {"prior_weight": 0}])
def test_the_ends_of_each_range_are_allowed(change):
    assert Settings(**change).validate() == Settings(**change)
