"""Words of a text query that name a place, a year, a month or an orientation, read as the filters they mean.

Only what the collection itself can answer is read: a place must be one of its own `city` or `country` values, a
year one of the years its dates span, an orientation needs its picture sizes. Nothing is guessed: a reading is
taken only with a cue that says so ("beach in Portugal", "Paris at night" capitalised, "June 2019", "in portrait
orientation"), and a word that may well mean something else is left alone ("Paris Hilton", "a Norway spruce", "a
mountain landscape", "portrait of a woman", "May I", "photos of Georgia", "iPhone 2019"). bench/understand.py
measures how often a reading taken is right on a labelled set of queries (bench/data/understand_queries.txt).

Each reading becomes a filter that keeps the items lacking its column (Filters.or_unknown): many photos have no place
or date, and a plain filter dropped them (bench/understand.py measured a filter, a boost and this).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime

import numpy as np

from search.bundle.attributes import Attributes
from search.query.options import MAX_FILTER_TEXT, Filters, SearchOptions

CUES = frozenset({"in", "at", "from", "near", "around", "across", "visiting", "throughout", "of", "to"})
STRONG_CUES = CUES - {"of", "to"}  # "photos of Georgia" may be a person; "in Georgia" is a place
AFTER_A_PLACE = frozenset({"", "at", "in", "on", "during", "by", "under", "with", "and", "or", "from", "after",
                           "before"})
"""What may follow a place named without a cue: "Paris at night", "Oslo"; not "a Norway spruce", "New Zealand lamb"
(a place before a noun is as often a kind of thing as where the picture was taken)."""
THINGS_OF = frozenset({"map", "maps", "flag", "flags", "poster", "posters", "logo", "symbol", "painting", "drawing"})
"""Before "of", what makes the place the picture's subject, not where it was taken ("a map of Japan")."""
NEGATIONS = frozenset({"not", "outside", "except", "excluding", "without", "besides", "but", "no"})
AMBIGUOUS_PLACES = frozenset({
    "georgia", "jordan", "chad", "victoria", "florence", "sydney", "austin", "charlotte", "phoenix", "lincoln",
    "china", "turkey", "nice", "split", "bath", "reading", "mobile", "orange", "chile", "guinea", "niger", "cuba",
    "santiago", "york", "mali", "eugene", "eden", "holland", "columbia", "lima", "salem", "troy", "warren",
    "vienna", "madison", "aurora", "kingston", "hamilton", "jackson", "regina", "adelaide", "marseille",
})
"""Places that are as often a person's name, a thing or a word: read only capitalised after a strong cue."""
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")
YEAR_CUES = frozenset({"in", "from", "during", "of"})
NUMBER_NOUNS = frozenset({
    "room", "route", "model", "number", "no", "version", "flight", "bus", "highway", "page", "apartment", "suite",
    "gate", "platform", "street", "road", "avenue", "track", "level", "floor", "code", "pin", "id", "batch",
    "since", "before", "after", "until", "till", "pre", "post", "by", "to", "between", "than", "over", "under",
    "and", "or",
})
"""Words before a number that make it something other than the year a picture was taken."""
RANGE_WORDS = frozenset({"to", "until", "till", "through", "and", "or"})
ORIENTATION_WORDS = {"portrait": "portrait", "landscape": "landscape", "square": "square", "vertical": "portrait",
                     "horizontal": "landscape"}
ORIENTATION_NOUNS = frozenset({"orientation", "oriented", "orientated", "format", "aspect"})
PICTURE_NOUNS = frozenset({"photos", "photo", "pictures", "picture", "images", "image", "shots", "photographs",
                           "pics", "pic"})
LEADS = frozenset({"a", "an", "the", "some", "only", "just", "show", "me", "find", "all", "any", "give"})
PEOPLE = frozenset({
    "woman", "women", "man", "men", "girl", "girls", "boy", "boys", "child", "children", "kid", "kids", "baby",
    "babies", "people", "person", "family", "families", "couple", "couples", "lady", "ladies", "gentleman", "bride",
    "groom", "friend", "friends", "mother", "father", "mom", "dad", "grandma", "grandmother", "grandfather",
    "grandpa", "model", "models", "actor", "actress", "player", "musician", "artist", "me", "my", "her", "his",
    "him", "them", "us", "our", "dog", "dogs", "cat", "cats", "puppy", "pet", "pets", "face", "faces", "student",
    "students", "worker", "workers", "senior", "teenager", "athlete", "singer", "dancer", "soldier", "nurse",
    "doctor", "chef", "guy", "guys", "elderly", "portrait", "headshot", "headshots", "selfie", "selfies",
})
"""Words after "portrait photos of" that make "portrait" the genre (a person's likeness), not the shape."""
TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
MAX_PLACE_WORDS = 4
MAX_READINGS = 6
"""More distinct readings than this in one query is a list of names, not a search: nothing is read (and the
rivals check stays cheap on a 1000-character query)."""


@dataclass(frozen=True, slots=True)
class Reading:
    """One thing the query was read as saying: its kind, what a chip shows, the words, and the filter values."""

    kind: str
    label: str
    words: str
    filters: tuple[tuple[str, str], ...]
    """Filter parameters (search/query/options.py Filters.from_params names) with their raw values."""

    def as_dict(self) -> dict[str, object]:
        """The reading as an API answer lists it."""
        return {"kind": self.kind, "label": self.label, "words": self.words, "filters": dict(self.filters)}


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """What a collection can answer: its place names, the years its dates span, whether it has picture sizes."""

    places: dict[tuple[str, ...], tuple[str, str]]
    """Casefolded words of a place -> (filter name "city" or "country", the value as stored)."""
    years: tuple[int, int] | None = None
    sizes: bool = False

    @property
    def empty(self) -> bool:
        """Whether nothing can be read (no places, dates or picture sizes)."""
        return not (self.places or self.years or self.sizes)

    @classmethod
    def of(cls, attributes: Attributes) -> Vocabulary:
        """The vocabulary of a bundle's attributes (place values, date span, sizes)."""
        places: dict[tuple[str, ...], tuple[str, str]] = {}
        for name in ("city", "country"):  # a name that is both (Singapore) is read as the country
            if attributes.has(name):
                places.update(place_keys(name, attributes.categories[name].values))
        years = None
        if attributes.has("date"):
            dates = attributes.numbers["date"][~np.isnan(attributes.numbers["date"])]
            if len(dates):
                years = (_year(float(dates.min())), _year(float(dates.max())))
        return cls(places, years, attributes.has("width") and attributes.has("height"))


def place_keys(name: str, values: Iterable[str]) -> dict[tuple[str, ...], tuple[str, str]]:
    keys = {}
    for value in values:
        words = tuple(word.casefold() for word in TOKEN.findall(value))
        if 0 < len(words) <= MAX_PLACE_WORDS and len(value) <= MAX_FILTER_TEXT:  # a filter could not say more
            keys[words] = (name, value)
    return keys


def _year(seconds: float) -> int:
    return datetime.fromtimestamp(seconds, UTC).year


@dataclass(frozen=True, slots=True)
class _Words:
    """The query's words as typed, casefolded, and the characters around each."""

    typed: list[str]
    folded: list[str]
    spans: list[tuple[int, int]]
    text: str

    @classmethod
    def of(cls, text: str) -> _Words:
        found = list(TOKEN.finditer(text))
        return cls([m.group() for m in found], [m.group().casefold() for m in found],
                   [m.span() for m in found], text)

    def at(self, index: int) -> str:
        """The casefolded word at `index`, "" outside the query."""
        return self.folded[index] if 0 <= index < len(self.folded) else ""

    def capitalised(self, index: int) -> bool:
        return 0 <= index < len(self.typed) and self.typed[index][:1].isupper()

    def ends_clause(self, index: int) -> bool:
        """Whether punctuation follows the word (a comma, a full stop, a question mark)."""
        return self.text[self.spans[index][1]:self.spans[index][1] + 1] in {",", ".", "?", "!", ";", ":", ")"}

    def glued(self, index: int) -> bool:
        """Whether a word is part of a longer number or code by a mark beside it (2019-05, #2019, 10:2019, 2019.5)."""
        start, end = self.spans[index]
        before, after = self.text[start - 1:start], self.text[end:end + 2]
        return (before != "" and before in "-/:.#$€£+") or after[:1] in {"-", "/", ":", "%"} or \
            (after[:1] in {".", ","} and after[1:2].isdigit())


def understand(text: str, vocabulary: Vocabulary, skip: Iterable[str] = ()) -> tuple[Reading, ...]:
    """The readings of `text` this collection can answer, kinds in `skip` left out; one per filter at most (two
    different places of one kind, or two years, read as nothing: a filter cannot say "or")."""
    words = _Words.of(text)
    found = list({reading.filters: reading for reading in (
        *_places(words, vocabulary), *_dates(words, vocabulary), *_orientations(words, vocabulary))}.values())
    if len(found) > MAX_READINGS:
        return ()
    readings = []
    for reading in found:
        names = dict(reading.filters)
        rivals = [other for other in found if any(names.get(name, value) != value for name, value in other.filters)]
        if reading.kind not in skip and not rivals and reading.filters not in {r.filters for r in readings}:
            readings.append(reading)  # "Lisbon … Lisbon": one chip
    return tuple(readings)


def read_query(text: str | None, vocabulary: Vocabulary, options: SearchOptions) -> tuple[Reading, ...]:
    """The readings `options` let a text query have: none when off or no text, and none for a filter the caller set."""
    if text is None or not options.understand:
        return ()
    given = options.filters
    return tuple(reading for reading in understand(text, vocabulary, options.not_understood)
                 if all(getattr(given, name) is None for name, _ in reading.filters))


def with_readings(options: SearchOptions, readings: Iterable[Reading]) -> SearchOptions:
    """`options` with the readings' filters added (their values checked by Filters.from_params, the one place)."""
    wanted = dict(pair for reading in readings for pair in reading.filters)
    if not wanted:
        return options
    parsed = Filters.from_params(wanted)
    added = {item.name: getattr(parsed, item.name) for item in fields(parsed) if item.name in wanted}
    lenient = tuple(sorted({*options.filters.or_unknown, *added}))
    return replace(options, filters=replace(options.filters, **added, or_unknown=lenient))


def _places(words: _Words, vocabulary: Vocabulary) -> list[Reading]:
    readings, index = [], 0
    while index < len(words.folded):
        for size in range(min(MAX_PLACE_WORDS, len(words.folded) - index), 0, -1):
            key = tuple(words.folded[index:index + size])
            if key in vocabulary.places:
                if _means_place(words, index, size, vocabulary):
                    name, value = vocabulary.places[key]
                    readings.append(Reading("place", value, " ".join(words.typed[index:index + size]),
                                            ((name, value),)))
                index += size - 1
                break
        index += 1
    return readings


def _means_place(words: _Words, start: int, size: int, vocabulary: Vocabulary) -> bool:
    """Whether the place-named words start..start+size are meant as the place (see the module's docstring)."""
    end, before = start + size, words.at(start - 1)
    if words.at(start - 2) in NEGATIONS or before in NEGATIONS:
        return False
    named = all(words.capitalised(i) for i in range(start, end))
    nxt = end if end < len(words.typed) else None
    next_is_name = nxt is not None and words.capitalised(nxt) and not _place_at(words, nxt, vocabulary)  # also
    # after a comma: "Paris, Texas" is another Paris
    if next_is_name or words.glued(end - 1):  # "Paris Hilton", "Georgia O'Keeffe", "Kyoto-style"
        return False
    if " ".join(words.folded[start:end]) in AMBIGUOUS_PLACES:
        return named and before in STRONG_CUES
    if before in CUES:  # one lower-case word is as often a thing as a place: "in spring", "at home", "in love"
        return (named or size > 1) and not (before == "of" and words.at(start - 2) in THINGS_OF)
    previous_is_name = start > 0 and words.capitalised(start - 1) and not _place_at(words, start - 1, vocabulary)
    alone = words.at(end) in AFTER_A_PLACE or _place_at(words, end, vocabulary) or words.ends_clause(end - 1)
    return named and alone and not previous_is_name  # "Paris at night", "Lisbon, Portugal"; not "Hotel Lisbon"


def _place_at(words: _Words, index: int, vocabulary: Vocabulary) -> bool:
    """Whether the word at `index` is part of a place name of the collection."""
    if not 0 <= index < len(words.folded):
        return False
    return any(tuple(words.folded[start:end]) in vocabulary.places
               for start in range(max(0, index - MAX_PLACE_WORDS + 1), index + 1)
               for end in range(index + 1, min(len(words.folded), start + MAX_PLACE_WORDS) + 1))


def _dates(words: _Words, vocabulary: Vocabulary) -> list[Reading]:
    if vocabulary.years is None:
        return []
    first, last = vocabulary.years
    readings = []
    for index, word in enumerate(words.folded):
        if not (len(word) == 4 and word.isdigit() and first <= int(word) <= last) or words.glued(index):
            continue
        year, before = int(word), words.at(index - 1)
        month = before if before in MONTHS else words.at(index - 2) if before == "of" else ""
        if month in MONTHS:  # "June 2019", "June of 2019": the month named is clear with its year
            start = index - 1 if before in MONTHS else index - 2
            readings.append(_month_reading(year, MONTHS.index(month) + 1, " ".join(words.typed[start:index + 1])))
        elif words.at(index + 1) in RANGE_WORDS:  # "from 2015 to 2017": a span, not one year
            continue
        elif before in YEAR_CUES or (index == len(words.folded) - 1 and index > 0 and before not in NUMBER_NOUNS
                                     and not (_product_like(words.typed[index - 1])
                                              and not _place_at(words, index - 1, vocabulary))):
            readings.append(Reading("date", word, word, (("date_from", f"{year}-01-01"), ("date_to", f"{year}-12-31"))))
    return readings


def _product_like(word: str) -> bool:
    """A word before a number that makes it a model or an edition: "iPhone 2019", "PS5 2020", "Windows 2019"."""
    return any(char.isdigit() for char in word) or any(char.isupper() for char in word[1:]) or \
        (word[:1].isupper() and word.casefold() not in MONTHS)


def _month_reading(year: int, month: int, words: str) -> Reading:
    last_day = calendar.monthrange(year, month)[1]
    label = f"{MONTHS[month - 1].capitalize()} {year}"
    return Reading("date", label, words, (("date_from", f"{year}-{month:02d}-01"),
                                          ("date_to", f"{year}-{month:02d}-{last_day:02d}")))


def _orientations(words: _Words, vocabulary: Vocabulary) -> list[Reading]:
    if not vocabulary.sizes:
        return []
    readings = []
    for index, word in enumerate(words.folded):
        if word in ORIENTATION_WORDS and _means_orientation(words, index, vocabulary):
            shape = ORIENTATION_WORDS[word]
            readings.append(Reading("orientation", shape, words.typed[index], (("orientation", shape),)))
    return readings


def _means_orientation(words: _Words, index: int, vocabulary: Vocabulary) -> bool:
    """"portrait orientation", "in landscape format", "in portrait" at the end, "vertical photos", "portrait photos
    of mountains"; not "portrait of a woman", "a mountain landscape", "landscape photos", "Times Square photos"."""
    word, before, after = words.at(index), words.at(index - 1), words.at(index + 1)
    if after in ORIENTATION_NOUNS:
        return True
    if before == "in" and (after in {"", "only"} or after in ORIENTATION_NOUNS):  # not "in portrait mode": a blur
        return True
    if after not in PICTURE_NOUNS or not (index == 0 or before in LEADS) or word == "landscape":
        return False  # "landscape photos" are of scenery
    if word != "portrait":
        return True
    subject = index + 3 + (words.at(index + 3) in {"a", "an", "the"})
    named = words.capitalised(subject) and not _place_at(words, subject, vocabulary)  # "of Anna": a person
    return words.at(index + 2) == "of" and not named and not PEOPLE & set(words.folded[index + 3:])
