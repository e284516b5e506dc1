"""Reading places, dates and orientation in a text query (search/query/understand.py): pure parsing, the filters it
adds (keeping the items without the data), and the option that turns it off."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pytest

from bench.understand import gallery_vocabulary, precision_recall
from search.bundle.attributes import Attributes
from search.errors import BadQueryError
from search.query.options import Filters, SearchOptions
from search.query.understand import Vocabulary, place_keys, understand, with_readings

VOCABULARY = gallery_vocabulary()


def readings(text: str) -> set[tuple[str, str]]:
    return {(reading.kind, reading.label) for reading in understand(text, VOCABULARY)}


def test_the_labelled_set_is_read_with_precision_of_at_least_098() -> None:
    found = precision_recall()
    assert found["queries"] >= 200
    assert found["precision"] >= 0.98, found["wrong_queries"]
    assert found["recall"] >= 0.75 and found["taken"] >= 140  # not precise by reading nothing


@pytest.mark.parametrize("text", [
    "Paris Hilton", "paris hilton at a party", "a mountain landscape", "landscape photos", "portrait of a woman",
    "portrait photos of my grandmother", "May I help you sign", "May flowers", "June Carter", "photos of Georgia",
    "a portrait of Georgia", "Georgia O'Keeffe painting", "Chile peppers", "Nice to meet you", "Sydney Sweeney",
    "town square photos", "Times Square photos", "vertical lines", "room 2019", "since 2019", "2019-05-12",
    "2019 toyota corolla", "Blade Runner 2049", "beaches not in Portugal", "Lisbon or Porto", "the Lisbon Treaty",
    "a map of Japan", "between 2015 and 2018", "2019", "a Norway spruce tree", "Kyoto-style garden", "iPhone 2019",
    "a cat in portrait mode", "from 2015 to 2017",
])
def test_traps_are_read_as_nothing(text: str) -> None:
    assert readings(text) == set()


@pytest.mark.parametrize(("text", "filters"), [
    ("beach in Portugal", {"country": "Portugal"}),
    ("Paris at night 2019", {"city": "Paris", "date_from": "2019-01-01", "date_to": "2019-12-31"}),
    ("picnic in may 2020", {"date_from": "2020-05-01", "date_to": "2020-05-31"}),
    ("February 2016 snow", {"date_from": "2016-02-01", "date_to": "2016-02-29"}),
    ("portrait photos of mountains", {"orientation": "portrait"}),
    ("waterfall in landscape orientation", {"orientation": "landscape"}),
    ("vineyards in Georgia", {"country": "Georgia"}),
    ("yellow cabs in new york", {"city": "New York"}),
])
def test_readings_say_the_filters_meant(text: str, filters: dict[str, str]) -> None:
    found = understand(text, VOCABULARY)
    assert {name: value for reading in found for name, value in reading.filters} == filters


def test_a_kind_left_out_is_not_read_and_a_kind_off_the_vocabulary_never() -> None:
    assert readings("beach in Portugal 2019") == {("place", "Portugal"), ("date", "2019")}
    assert {reading.kind for reading in understand("beach in Portugal 2019", VOCABULARY, ("place",))} == {"date"}
    assert readings("beach in Brazil 2031") == set()  # neither in this collection's places nor its years
    assert len(understand("Lisbon trams, more trams in Lisbon", VOCABULARY)) == 1


def test_reading_filters_keep_items_without_the_data_and_an_explicit_filter_wins() -> None:
    attributes = Attributes(pa.table({"country": ["Portugal", "Japan", None],
                                      "date": ["2019-03-01T00:00:00", None, "2015-01-01T00:00:00"]}))
    plain = SearchOptions()
    read = with_readings(plain, understand("beach in Portugal", VOCABULARY))
    assert read.filters.or_unknown == ("country",)
    assert read.filters.mask(attributes).tolist() == [True, False, True]  # Japan known: dropped; unknown: kept
    assert Filters(country="Portugal").mask(attributes).tolist() == [True, False, False]  # a chosen filter: strict
    dated = with_readings(plain, understand("beach in 2019", VOCABULARY))
    assert dated.filters.mask(attributes).tolist() == [True, True, False]
    assert np.array_equal(read.filters.mask(attributes), with_readings(read, ()).filters.mask(attributes))


@pytest.mark.parametrize(("value", "kinds"), [("date, place", ("place", "date")), (["orientation"], ("orientation",)),
                                              ("", ())])
def test_not_understood_takes_kinds(value: object, kinds: tuple[str, ...]) -> None:
    assert SearchOptions.from_params({"not_understood": value}).not_understood == kinds


def test_bad_switches_are_refused_with_the_valid_values() -> None:
    with pytest.raises(BadQueryError, match="place, date, orientation"):
        SearchOptions.from_params({"not_understood": "places"})
    with pytest.raises(BadQueryError, match="understand must be true or false"):
        SearchOptions.from_params({"understand": "maybe"})
    assert SearchOptions.from_params({"understand": "false"}).plain  # the plain ranking: nothing else changed


def test_common_words_that_are_also_places_are_not_read_and_bad_place_values_never() -> None:
    """A collection's free-text cities include common words (Paradise, Spring, Home): one lower-case word after a
    cue is not read as a place; a stored value with spaces around it still matches its rows; a value too long for
    a filter is never read (its search would be refused)."""
    common = ["Paradise", "Spring", "Winter", "Love", "Home", "Snow", "Sunset", "Beach", "Cork"]
    vocabulary = Vocabulary(place_keys("city", [*common, "New York", "Lisbon ", "Japan" + "x" * 300]))
    for text in ("couple in love", "flowers in spring", "dog at home", "people at sunset", "skiing in snow",
                 "a bottle in cork", "walk in paradise", "japan" + "x" * 300):
        assert understand(text, vocabulary) == (), text
    assert [r.filters for r in understand("pubs in Cork", vocabulary)] == [(("city", "Cork"),)]
    assert [r.filters for r in understand("cabs in new york", vocabulary)] == [(("city", "New York"),)]
    (lisbon,) = understand("beach in Lisbon", vocabulary)
    attributes = Attributes(pa.table({"city": ["Lisbon ", "Lisbon ", "Porto", None]}))
    mask = with_readings(SearchOptions(), [lisbon]).filters.mask(attributes)
    assert mask.tolist() == [True, True, False, True]


def test_a_long_list_of_names_is_read_as_nothing_and_quickly() -> None:
    vocabulary = Vocabulary(place_keys("city", [chr(c) for c in range(ord("A"), ord("Z") + 1)]))
    started = time.process_time()
    assert understand(" ".join(chr(ord("A") + i % 26) for i in range(500)), vocabulary) == ()
    assert time.process_time() - started < 0.1
