"""Error locations are built from the steps a parser walked and rendered once
(function/service/protocols/location.py)."""

from __future__ import annotations

import pytest

from function.service.protocols.location import Label, Location
from function.service.protocols.v2_request import COLUMN_ROW, ROW

INPUTS = Location.of("inputs")


@pytest.mark.parametrize(
    ("where", "shown"),
    [
        (INPUTS, "inputs"),
        (INPUTS.at(0), "inputs[0]"),
        (INPUTS.at(0).key("data").at(3), "inputs[0].data[3]"),
        (INPUTS.at(2).key("parameters").key("binary_data_size"),
         "inputs[2].parameters.binary_data_size"),
        (Location.of("outputs").at(1).key("parameters"), "outputs[1].parameters"),
        (INPUTS.at(Label("*")).key("data").at(7), "inputs[*].data[7]"),
        (Location().key("id"), "id"),
    ],
)  # fmt: skip
def test_a_location_renders_its_keys_and_indices(where: Location, shown: str) -> None:
    assert str(where) == shown


def test_a_location_is_a_value_its_steps_do_not_change() -> None:
    base = INPUTS.at(0)

    deeper = base.key("data").at(1)

    assert (str(base), str(deeper)) == ("inputs[0]", "inputs[0].data[1]")
    assert INPUTS.at(0) == base and hash(INPUTS.at(0)) == hash(base)


def test_the_row_templates_the_core_takes_name_the_row_as_before() -> None:
    """The core's row checks take a template with the row left open (predict.rows_to_input)."""
    assert ROW.format(4) == "inputs[0].data[row 4]"
    assert COLUMN_ROW.format(4) == "inputs[*].data[4]"
