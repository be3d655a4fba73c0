"""The tier catalog: the default ships the plan's three tiers; bad files name file, tier and field."""

from __future__ import annotations

import pytest

from kynsey.catalog import load_catalog, parse_catalog
from kynsey.errors import CatalogError
from tests.conftest import OLLAMA_TIERS

BASE = """
default_tier = "standard"
[backends.ollama]
kind = "ollama"
[plans.standard]
grants = ["standard"]
[plans.pro]
grants = ["standard", "pro"]
"""


def tier(slug: str, **extra) -> str:
    lines = [
        "[[tiers]]",
        f'tier = "{slug}"',
        f'display_name = "{slug.title()}"',
        f'internal_name = "KYNSEY {slug}"',
        f'model_id = "{slug}-model"',
    ]
    lines += [f"{key} = {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


def test_default_catalog_has_the_plans_three_tiers_and_a_local_one_they_fall_back_to():
    catalog = load_catalog(None)
    assert list(catalog.tiers) == ["standard", "pro", "code", "local"]
    standard = catalog.tiers["standard"]
    assert (standard.display_name, standard.internal_name, standard.model_id) == (
        "Standard",
        "KYNSEY Mini",
        "llama3.2:3b-instruct-fp16",
    )
    assert standard.description == "Fast and efficient for everyday tasks"
    assert catalog.plans_unlocking(catalog.tiers["code"]) == ["pro"]
    assert catalog.plan_allows("standard", standard) and not catalog.plan_allows("standard", catalog.tiers["pro"])
    # The first run answers without Ollama: every plan grants Local, every Ollama tier ends its chain there.
    local = catalog.tiers["local"]
    assert (local.backend, local.model_id, catalog.backends["local"].kind) == ("local", "smollm2", "local")
    assert catalog.plans_unlocking(local) == ["standard", "pro"]
    assert all(t.fallback[-1] == "local" for t in catalog.tiers.values() if t.backend == "ollama")


def test_the_tests_catalog_is_the_built_in_one_without_its_local_tier():
    built_in, tests = load_catalog(None), load_catalog(OLLAMA_TIERS)
    assert list(tests.tiers) == [t for t in built_in.tiers if t != "local"] and list(tests.backends) == ["ollama"]
    for slug, tier in tests.tiers.items():
        expected = built_in.tiers[slug].model_copy(update={"fallback": [f for f in built_in.tiers[slug].fallback if f != "local"]})
        assert tier == expected, slug
    for name, plan in tests.plans.items():
        assert plan.grants == [g for g in built_in.plans[name].grants if g != "local"]


def test_a_valid_file_loads(tmp_path):
    path = tmp_path / "tiers.toml"
    path.write_text(BASE + tier("standard") + tier("pro", requires='"pro"', fallback='["standard"]'))
    catalog = load_catalog(path)
    assert catalog.tiers["pro"].fallback == ["standard"] and catalog.source == str(path)


@pytest.mark.parametrize(
    "body, tier_name, field, words",
    [
        (tier("standard") + tier("standard"), "standard", "tier", "duplicate"),
        (tier("standard", fallback='["nope"]'), "standard", "fallback", "unknown fallback"),
        (tier("standard", backend='"gpu-box"'), "standard", "backend", "unknown backend"),
        (
            tier("standard", fallback='["pro"]') + tier("pro", requires='"pro"', fallback='["standard"]'),
            "standard",
            "fallback",
            "cycle",
        ),
        (tier("standard") + tier("pro", requires='"enterprise"'), "pro", "requires", "no plan grants"),
        (tier("standard", colour='"red"'), "standard", "colour", "Extra inputs"),
        (tier("Bad Slug"), "Bad Slug", "tier", "slug"),
    ],
)
def test_invalid_catalogs_name_file_tier_and_field(tmp_path, body, tier_name, field, words):
    path = tmp_path / "bad.toml"
    path.write_text(BASE + body)
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    message = str(caught.value)
    assert str(path) in message and f"tier '{tier_name}'" in message and f"field '{field}'" in message
    assert words.lower() in message.lower()


def test_broken_toml_and_missing_file_are_named(tmp_path):
    with pytest.raises(CatalogError, match="not valid TOML"):
        parse_catalog("[[tiers]\n", source="x.toml")
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "absent.toml")


def test_fallback_cycle_through_three_tiers_is_shown(tmp_path):
    body = (
        tier("standard", fallback='["pro"]')
        + tier("pro", requires='"pro"', fallback='["code"]')
        + tier("code", requires='"pro"', fallback='["standard"]')
    )
    with pytest.raises(CatalogError, match="standard -> pro -> code -> standard"):
        parse_catalog(BASE + body, source="c.toml")


@pytest.mark.parametrize("options, field", [('{ temperature = "warm" }', "temperature"), ("{ num_ctx = 64 }", "num_ctx"),
                                            ("{ top_p = 1.5 }", "top_p"), ('{ stop = 5 }', "stop")])
def test_a_tier_option_of_the_wrong_type_stops_start_up_naming_the_tier_and_option(tmp_path, options, field):
    """Before, such a value went to the backend with every request, failed there, and opened the model's circuit."""
    path = tmp_path / "tiers.toml"
    path.write_text(OLLAMA_TIERS.read_text().replace("options = { temperature = 0.2, num_ctx = 8192 }", f"options = {options}"))
    with pytest.raises(CatalogError) as bad:
        load_catalog(path)
    assert bad.value.tier == "code" and bad.value.field == "options" and f"field 'options': {field}" in str(bad.value)
