"""The compatible APIs' option rules and the catalog's `pinned` field (SPEC F16)."""

from __future__ import annotations

import pytest

from kynsey.catalog import load_catalog
from kynsey.catalog.schema import ClientOptions
from kynsey.compat.service import CLIENT_OPTIONS, effective_options
from kynsey.errors import CatalogError
from tests.conftest import OLLAMA_TIERS


def test_a_client_sets_sampling_options_but_not_what_the_tier_pins(tmp_path):
    path = tmp_path / "tiers.toml"
    path.write_text(OLLAMA_TIERS.read_text().replace('requires = "code"', 'requires = "code"\npinned = ["temperature", "seed"]'))
    catalog = load_catalog(path)
    asked = {"temperature": 1.5, "seed": 3, "num_predict": 10}
    assert effective_options(catalog.tiers["code"], asked) == {"temperature": 0.2, "num_ctx": 8192, "num_predict": 10}
    assert effective_options(catalog.tiers["pro"], asked) == {"temperature": 1.5, "num_ctx": 8192, "seed": 3,
                                                              "num_predict": 10}
    assert catalog.tiers["pro"].options == {"temperature": 0.7, "num_ctx": 8192}  # the catalog is untouched


def test_only_client_options_can_be_pinned(tmp_path):
    path = tmp_path / "tiers.toml"
    path.write_text(OLLAMA_TIERS.read_text().replace('requires = "code"', 'requires = "code"\npinned = ["num_ctx"]'))
    with pytest.raises(CatalogError) as bad:
        load_catalog(path)
    assert "code" in str(bad.value) and "pinned" in str(bad.value)


def test_the_ollama_api_types_every_option_a_client_may_set_and_no_other():
    """``ClientOptions`` bounds what reaches a backend; an option added to ClientOption without a type
    there would reach it unchecked, and one typed there but not allowed would be dropped unseen."""
    assert set(ClientOptions.model_fields) == CLIENT_OPTIONS
