"""Telugu text layer: numbers, clock times, dates and money as Telugu words, and a normaliser.

The synthesizer speaks whatever normalize_text returns and the recogniser learns to write it, so
both must agree on one spoken form of "7:30" or "₹1,500". That form is decided here, once, and
kept regular so a model can learn it:

  numbers     100 వంద, 150 నూట యాభై, 200 రెండు వందలు, 250 రెండు వందల యాభై,
              1000 వెయ్యి, 1500 వెయ్యి ఐదు వందలు, 2000 రెండు వేలు, 2024 రెండు వేల ఇరవై నాలుగు,
              1,00,000 లక్ష, 1,50,000 లక్షా యాభై వేలు, 2,00,000 రెండు లక్షలు,
              1,00,00,000 కోటి, 1,50,00,000 కోటీ యాభై లక్షలు, 2,00,00,000 రెండు కోట్లు.
              Years are read as plain numbers (1947 = వెయ్యి తొమ్మిది వందల నలభై ఏడు).
  before a    the number takes its attributive form: ఒకటి -> ఒక alone (ఒక రూపాయి), ఒక్క at the
  noun        end of a compound (ఇరవై ఒక్క రోజులు); వందలు/వేలు/లక్షలు/కోట్లు -> వందల/వేల/...
              (రెండు వందల రూపాయలు).
  ordinals    మొదటి, రెండవ, మూడవ, ..., ఇరవయ్యవ, ఇరవై ఒకటవ, వందవ; colloquial=True gives
              ఒకటో, రెండో, ఐదో (ఐదో తరగతి, పదిహేనో తేదీ).
  time        ఉదయం ఏడు గంటల ముప్పై నిమిషాలు; one o'clock is ఒంటి గంట. Part of day from the
              24-hour clock: 3-5 తెల్లవారుజామున, 6-11 ఉదయం, 12-15 మధ్యాహ్నం, 16-19 సాయంత్రం,
              20-2 రాత్రి. colloquial=True says :15 :30 :45 as ఏడుంబావు, ఏడున్నర,
              ఎనిమిదికి పావు తక్కువ.
  dates       ఆగస్టు పదిహేను, రెండు వేల ఇరవై నాలుగు (month, day, comma, year).
  money       ఒక రూపాయి, రెండు వందల రూపాయలు, పది రూపాయల యాభై పైసలు.
  decimals    మూడు పాయింట్ ఒకటి నాలుగు (the word people say, digits after the point one by one).
  digits      phone numbers and numbers of ten or more digits are read digit by digit.
  normalize   "7:30" alone gets no part of day (morning or evening is unknown); "19:30", "7:30 pm"
              and "సాయంత్రం 7:30" say it once. Zero-width joiners are dropped (no sound):
              హైదరాబాద్‌లో becomes హైదరాబాద్లో.
"""
import re
import sys
import unicodedata
from datetime import date

# --- words -------------------------------------------------------------------------------------------

ONES = [
    "సున్నా", "ఒకటి", "రెండు", "మూడు", "నాలుగు", "ఐదు", "ఆరు", "ఏడు", "ఎనిమిది", "తొమ్మిది",
    "పది", "పదకొండు", "పన్నెండు", "పదమూడు", "పద్నాలుగు", "పదిహేను", "పదహారు", "పదిహేడు",
    "పద్దెనిమిది", "పందొమ్మిది",
]
TENS = ["", "", "ఇరవై", "ముప్పై", "నలభై", "యాభై", "అరవై", "డెబ్బై", "ఎనభై", "తొంభై"]

# Monday first, so WEEKDAYS[d.weekday()] names a datetime.date.
WEEKDAYS = ["సోమవారం", "మంగళవారం", "బుధవారం", "గురువారం", "శుక్రవారం", "శనివారం", "ఆదివారం"]
# The English calendar months as spoken in Andhra Pradesh and Telangana.
MONTHS = [
    "జనవరి", "ఫిబ్రవరి", "మార్చి", "ఏప్రిల్", "మే", "జూన్",
    "జులై", "ఆగస్టు", "సెప్టెంబర్", "అక్టోబర్", "నవంబర్", "డిసెంబర్",
]
PARTS_OF_DAY = ["తెల్లవారుజామున", "ఉదయం", "మధ్యాహ్నం", "సాయంత్రం", "రాత్రి"]
TELUGU_DIGITS = "౦౧౨౩౪౫౬౭౮౯"

_DAYS_IN_MONTH = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]  # without a year, allow 29 February
# (size, exactly one, one followed by more, plural stem). The joined forms are what people say:
# లక్షా యాభై వేలు, కోటీ పది లక్షలు, నూట పది; వెయ్యి has no such form in common use.
_SCALES = [
    (10**7, "కోటి", "కోటీ", "కోట్ల"),
    (10**5, "లక్ష", "లక్షా", "లక్షల"),
    (1000, "వెయ్యి", "వెయ్యి", "వేల"),
    (100, "వంద", "నూట", "వందల"),
]
_PLURAL_SCALES = {"కోట్లు", "లక్షలు", "వేలు", "వందలు"}


# --- cardinals ---------------------------------------------------------------------------------------

def number_to_words(n: int, *, before_noun: bool = False) -> str:
    """Telugu words for an integer, Indian grouping (వంద, వెయ్యి, లక్ష, కోటి); no upper limit
    (a thousand crore is వెయ్యి కోట్లు). before_noun gives the attributive form: రెండు వందల
    (రూపాయలు), ఇరవై ఒక్క (రోజులు)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"number_to_words takes an int, got {type(n).__name__}")
    if n < 0:
        return "మైనస్ " + number_to_words(-n, before_noun=before_noun)
    words = _cardinal(n)
    return _before_noun(words) if before_noun else words


def _cardinal(n: int) -> str:
    if n < 20:
        return ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return TENS[tens] + (" " + ONES[ones] if ones else "")
    for size, one, one_joined, plural in _SCALES:
        if n >= size:
            count, rest = divmod(n, size)
            if count == 1:
                return f"{one_joined} {_cardinal(rest)}" if rest else one
            head = f"{_before_noun(_cardinal(count))} {plural}"
            return f"{head} {_cardinal(rest)}" if rest else head + "ు"
    raise AssertionError("unreachable")


def _before_noun(words: str) -> str:
    """Attributive form: the last word of the number changes, nothing else."""
    head, _, last = words.rpartition(" ")
    if last == "ఒకటి":
        last = "ఒక్క" if head and head != "మైనస్" else "ఒక"
    elif last in _PLURAL_SCALES:
        last = last[:-1]
    return f"{head} {last}" if head else last


def _oblique(words: str) -> str:
    """The form before a postposition (నుంచి, వరకు, కంటే): only a final -లు becomes -ల."""
    return words[:-1] if words.endswith("లు") else words


def with_case_ending(words: str, suffix: str) -> str:
    """Glue a case ending onto number words as Telugu does: (రెండు వందలు, కి) -> రెండు వందలకి,
    (ఏడు గంటల ముప్పై నిమిషాలు, కు) -> ...నిమిషాలకు, (ఒక నిమిషం, కి) -> ఒక నిమిషానికి,
    (పదిహేను, న) -> పదిహేనున. normalize_text uses it for 100కి, 2024లో, 15న."""
    if not suffix:
        return words
    if words.endswith("లు"):  # రెండు వందలు + కి -> రెండు వందలకి
        return words[:-1] + suffix
    if words.endswith("ం") and suffix.startswith(("కి", "కు")):  # నిమిషం + కి -> నిమిషానికి
        return words[:-1] + "ానికి" + suffix[2:]
    return words + suffix


# --- ordinals ----------------------------------------------------------------------------------------

def ordinal_to_words(n: int, colloquial: bool = False) -> str:
    """మొదటి, రెండవ, మూడవ, ..., ఇరవయ్యవ, ఇరవై ఒకటవ, వందవ. colloquial=True gives the spoken
    -ో form for every n, one included: ఒకటో, రెండో, ఐదో (ఐదో తరగతి, ఒకటో తేదీ)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"ordinals start at 1, got {n!r}")
    if n == 1 and not colloquial:
        return "మొదటి"
    return _ordinal(number_to_words(n), colloquial)


def _ordinal(words: str, colloquial: bool) -> str:
    head, _, last = words.rpartition(" ")
    if last.endswith("ై"):  # ఇరవై -> ఇరవయ్య-
        stem = last[:-1] + "య్య"
    elif last.endswith(("ు", "ి")):  # రెండు -> రెండ-, ఎనిమిది -> ఎనిమిద-
        stem = last[:-1]
    else:  # వంద, లక్ష already end in the inherent vowel
        stem = last
    last = stem + ("ో" if colloquial else "వ")
    return f"{head} {last}" if head else last


# --- time and dates ----------------------------------------------------------------------------------

def part_of_day(hour: int) -> str:
    """తెల్లవారుజామున, ఉదయం, మధ్యాహ్నం, సాయంత్రం or రాత్రి for an hour of the 24-hour clock."""
    if not 0 <= hour <= 23:
        raise ValueError(f"hour must be 0-23, got {hour}")
    if 3 <= hour < 6:
        return PARTS_OF_DAY[0]
    if 6 <= hour < 12:
        return PARTS_OF_DAY[1]
    if 12 <= hour < 16:
        return PARTS_OF_DAY[2]
    if 16 <= hour < 20:
        return PARTS_OF_DAY[3]
    return PARTS_OF_DAY[4]


def time_to_words(hour: int, minute: int = 0, *, with_part_of_day: bool = True,
                  colloquial: bool = False) -> str:
    """Clock time from the 24-hour clock, said on the 12-hour clock with the part of day:
    (7, 30) -> ఉదయం ఏడు గంటల ముప్పై నిమిషాలు, (13, 0) -> మధ్యాహ్నం ఒంటి గంట.
    colloquial=True: (19, 30) -> సాయంత్రం ఏడున్నర, (7, 15) -> ఉదయం ఏడుంబావు,
    (7, 45) -> ఉదయం ఎనిమిదికి పావు తక్కువ; other minutes as in the regular form."""
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        raise ValueError(f"not a clock time: {hour}:{minute:02d}")
    prefix = part_of_day(hour) + " " if with_part_of_day else ""
    h12 = hour % 12 or 12
    if colloquial and minute in (15, 30, 45):
        if minute == 15:
            return prefix + _clock_stem(h12) + "ంబావు"
        if minute == 30:
            return prefix + _clock_stem(h12) + "న్నర"
        return prefix + _clock_stem(h12 % 12 + 1) + "కి పావు తక్కువ"
    if minute == 0:
        return prefix + ("ఒంటి గంట" if h12 == 1 else f"{ONES[h12]} గంటలు")
    hour_words = "ఒంటి గంట" if h12 == 1 else f"{ONES[h12]} గంటల"
    minute_words = "ఒక నిమిషం" if minute == 1 else f"{number_to_words(minute, before_noun=True)} నిమిషాలు"
    return f"{prefix}{hour_words} {minute_words}"


def _clock_stem(h12: int) -> str:
    # The hour as it joins -న్నర, -ంబావు, -కి: ఏడున్నర, ఒంటిగంటన్నర.
    return "ఒంటిగంట" if h12 == 1 else ONES[h12]


def date_to_words(day: int, month: int, year: int | None = None, *, weekday: bool = False) -> str:
    """(15, 8) -> ఆగస్టు పదిహేను; (15, 8, 2024) -> ఆగస్టు పదిహేను, రెండు వేల ఇరవై నాలుగు;
    weekday=True (needs the year) puts the day's name first: గురువారం, ఆగస్టు పదిహేను, ..."""
    if not 1 <= month <= 12:
        raise ValueError(f"month must be 1-12, got {month}")
    if year is not None:
        when = date(year, month, day)  # raises for 30 February and the like
    elif not 1 <= day <= _DAYS_IN_MONTH[month - 1]:
        raise ValueError(f"{MONTHS[month - 1]} has no day {day}")
    words = f"{MONTHS[month - 1]} {number_to_words(day)}"
    if year is not None:
        words += f", {number_to_words(year)}"
    if weekday:
        if year is None:
            raise ValueError("weekday needs the year")
        words = f"{WEEKDAYS[when.weekday()]}, {words}"
    return words


# --- money, decimals, digits -------------------------------------------------------------------------

def money_to_words(rupees: int, paise: int = 0) -> str:
    """ఒక రూపాయి, యాభై రూపాయలు, రెండు వేల రూపాయలు, పది రూపాయల యాభై పైసలు, ఐదు పైసలు."""
    if rupees < 0 or not 0 <= paise <= 99:
        raise ValueError(f"not an amount: {rupees} rupees {paise} paise")
    paise_words = "ఒక పైసా" if paise == 1 else f"{number_to_words(paise, before_noun=True)} పైసలు"
    if rupees == 0:
        return paise_words if paise else "సున్నా రూపాయలు"
    rupee_words = "ఒక రూపాయి" if rupees == 1 else f"{number_to_words(rupees, before_noun=True)} రూపాయలు"
    return f"{_oblique(rupee_words)} {paise_words}" if paise else rupee_words


def decimal_to_words(value) -> str:
    """3.14 or "3.14" -> మూడు పాయింట్ ఒకటి నాలుగు. Pass a string to keep trailing zeros."""
    text = to_ascii_digits(value) if isinstance(value, str) else _plain_decimal(value)
    m = re.fullmatch(r"\s*(-?)([0-9]+)(?:\.([0-9]+))?\s*", text)
    if not m:
        raise ValueError(f"not a decimal number: {value!r}")
    sign, whole, frac = m.groups()
    words = ("మైనస్ " if sign else "") + number_to_words(int(whole))
    return f"{words} పాయింట్ {digits_to_words(frac)}" if frac else words


def _plain_decimal(value) -> str:
    text = repr(value) if isinstance(value, float) else str(value)
    if "e" in text.lower():  # 1e-07: write it out
        from decimal import Decimal
        text = format(Decimal(text), "f")
    return text


def digits_to_words(text) -> str:
    """Digit by digit: "9848022338" -> తొమ్మిది ఎనిమిది నాలుగు ... Groups separated by spaces or
    hyphens in the input are separated by commas, which the synthesizer hears as short pauses."""
    groups = re.findall(r"[0-9]+", to_ascii_digits(str(text)))
    return ", ".join(" ".join(ONES[int(d)] for d in group) for group in groups)


def phone_to_words(text: str) -> str:
    """A phone number digit by digit, a leading + said as ప్లస్: "+91 98480 22338"."""
    words = digits_to_words(text)
    return "ప్లస్ " + words if str(text).strip().startswith("+") else words


def to_ascii_digits(text: str) -> str:
    """Telugu digits (౦-౯), and any other script's decimal digits, as 0-9."""
    return "".join(str(unicodedata.decimal(ch)) if ch.isdecimal() and not ch.isascii() else ch
                   for ch in text)


# --- normalisation -----------------------------------------------------------------------------------
# Rules run in order, most specific first (a phone number is not a cardinal, 15/08/2024 is not a
# division), each turning its digits into words so later rules never see them again.

_TEL = "\u0C00-\u0C7F"
_NOT_TEL_BEFORE = rf"(?<![{_TEL}A-Za-z])"
_SUFFIX = rf"([{_TEL}]*)"  # a case ending written onto the number: 100కి, 2024లో, 15న

# Nouns counted by a number, by their first letters: the number before them is attributive.
_COUNTED_NOUNS = (
    "రూపాయ", "పైస", "మంది", "సార్లు", "సారి", "రోజు", "వారం", "వారాల", "వారాలు", "నెల",
    "సంవత్సర", "ఏళ్ల", "ఏళ్ళ", "ఏండ్ల", "గంట", "నిమిష", "సెకన", "కిలో", "కేజీ", "గ్రాము",
    "లీటర", "లీటరు", "మీటర", "మీటరు", "అడుగు", "అడుగుల", "అంగుళ", "ఎకరా", "ఎకరం", "శాతం",
    "శాతా", "డిగ్రీ", "పేజీ", "వేల", "వేలు", "లక్ష", "కోటి", "కోట్ల", "డజను", "జత", "తులం",
    "తులాల", "మార్కు", "బస్తా", "గ్లాసు", "కప్పు", "పుస్తక", "గ్రామ", "జిల్లా", "ఇళ్ల",
)
_MEASURED = ("దూర", "వేగ", "పొడ", "ఎత్తు", "లోతు", "బరువు")  # 5 కి.మీ. దూరం: the unit is oblique
_POSTPOSITIONS = {"నుంచి", "నుండి", "వరకు", "వరకూ", "దాకా", "కంటే", "కన్నా", "లోపు", "పైగా", "పైన"}
_PART_OF_DAY_WORDS = ("ఉదయం", "పొద్దున", "పొద్దున్న", "పొద్దున్నే", "మధ్యాహ్నం", "సాయంత్రం",
                      "రాత్రి", "అర్ధరాత్రి", "తెల్లవారుజామున", "వేకువజామున")
_TIME_OF_DAY_ABBREVIATIONS = {"ఉ": "ఉదయం", "మ": "మధ్యాహ్నం", "సా": "సాయంత్రం", "రా": "రాత్రి"}
_WORD_ABBREVIATIONS = {
    "డా.": "డాక్టర్", "ప్రొ.": "ప్రొఫెసర్", "నం.": "నంబర్",
    "క్రీ.పూ.": "క్రీస్తు పూర్వం", "క్రీ.శ.": "క్రీస్తు శకం", "Dr.": "డాక్టర్",
}
# Units written after a number: (abbreviations, singular, plural).
_UNITS = [
    (("కి.మీ.", "కి.మీ", "km"), "కిలోమీటరు", "కిలోమీటర్లు"),
    (("కి.గ్రా.", "కి.గ్రా", "kg"), "కిలో", "కిలోలు"),
    (("సెం.మీ.", "సెం.మీ", "cm"), "సెంటీమీటరు", "సెంటీమీటర్లు"),
    (("మి.మీ.", "మి.మీ", "mm"), "మిల్లీమీటరు", "మిల్లీమీటర్లు"),
    (("మి.లీ.", "మి.లీ", "ml"), "మిల్లీలీటరు", "మిల్లీలీటర్లు"),
    (("°C", "° C", "℃"), "డిగ్రీ సెల్సియస్", "డిగ్రీల సెల్సియస్"),
    (("°",), "డిగ్రీ", "డిగ్రీలు"),
    (("గం.",), "గంట", "గంటలు"),
    (("ని.",), "నిమిషం", "నిమిషాలు"),
    (("లీ.",), "లీటరు", "లీటర్లు"),
]
_UNIT_WORDS = {abbr: (one, many) for abbrs, one, many in _UNITS for abbr in abbrs}
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))  # no sound, no glyph


def _alternation(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


def _next_word(text: str, pos: int) -> str:
    m = re.match(rf"\s*([{_TEL}]+)", text[pos:])
    return m.group(1) if m else ""


def _is_counted_noun(word: str) -> bool:
    return word.startswith(_COUNTED_NOUNS) or word.endswith(("లు", "ళు"))


def _say_number(whole: str, frac: str | None, text: str, end: int, suffix: str = "") -> str:
    """Words for the number whole[.frac] found in text just before position end."""
    if frac is not None:
        words = decimal_to_words(f"{whole}.{frac}")
    elif (len(whole) > 1 and whole.startswith("0")) or len(whole) >= 10:
        words = digits_to_words(whole)  # 007, 0863, account numbers: a code, not a quantity
    else:
        n = int(whole)
        following = suffix or _next_word(text, end)
        if suffix.startswith("వ") and (suffix == "వ" or suffix.startswith("వద")):
            return _ordinal(number_to_words(n), colloquial=False) + suffix[1:]  # 5వ, 5వది
        if _is_counted_noun(following):
            words = number_to_words(n, before_noun=True)
            return f"{words} {suffix}" if suffix else words  # 2కిలోలు -> రెండు కిలోలు
        words = number_to_words(n)
        if following in _POSTPOSITIONS:
            words = _oblique(words)
    return with_case_ending(words, suffix)


def _grouped(text: str) -> str | None:
    """1,50,000 or 150,000 without commas; None when the commas are not digit grouping."""
    if re.fullmatch(r"[0-9]{1,2}(,[0-9]{2})*,[0-9]{3}|[0-9]{1,3}(,[0-9]{3})+", text):
        return text.replace(",", "")
    return None


def _number_match(m: re.Match) -> str:
    whole, frac, suffix = m.groups()
    if "," in whole:
        plain = _grouped(whole)
        if plain is None:  # "1,2,3" is a list, not a number
            *first, last = whole.split(",")
            return ", ".join(_say_number(p, None, "", 0) for p in first) + ", " + \
                _say_number(last, frac, m.string, m.end(), suffix)
        whole = plain
    return _say_number(whole, frac, m.string, m.end(), suffix)


def _time_match(m: re.Match) -> str:
    hour, minute, meridiem, hour_word, suffix = m.groups()
    hour, minute = int(hour), int(minute)
    before = m.string[:m.start()].rstrip()
    said_already = before.endswith(_PART_OF_DAY_WORDS)
    meridiem = (meridiem or "").lower().replace(".", "")
    if meridiem and 1 <= hour <= 12:
        hour = hour % 12 + (12 if meridiem == "pm" else 0)
    # 7:30 alone could be morning or evening: name the part of day only when the clock says it.
    known = bool(meridiem) or hour == 0 or hour >= 13
    words = time_to_words(hour, minute, with_part_of_day=known and not said_already)
    if hour_word and hour_word not in ("గంటలు", "గం."):  # "7:30 గంటలకు": the ending moves over
        suffix = hour_word[len("గంటల"):] + suffix
    return with_case_ending(words, suffix)


def _date_match(m: re.Match) -> str:
    day, month, year, suffix = m.group(1, 3, 4, 5)  # group 2 is the separator
    day, month, year = int(day), int(month), int(year)
    if year < 100:
        year += 2000 if year < 50 else 1900
    try:
        return with_case_ending(date_to_words(day, month, year), suffix)
    except ValueError:
        return m.group(0).replace("/", " / ")  # not a date: the number rule reads the parts


def _money_match(m: re.Match) -> str:
    whole, frac, suffix = m.groups()
    rupees = int(_grouped(whole) or whole.replace(",", ""))
    paise = int(frac.ljust(2, "0")) if frac else 0
    return with_case_ending(money_to_words(rupees, paise), suffix)


def _percent_match(m: re.Match) -> str:
    whole, frac = m.groups()
    number = decimal_to_words(f"{whole}.{frac}") if frac else number_to_words(int(whole), before_noun=True)
    return number + " శాతం"


def _unit_match(m: re.Match) -> str:
    whole, frac, unit = m.groups()
    one, many = _UNIT_WORDS[unit]
    following = _next_word(m.string, m.end())
    if following in _POSTPOSITIONS or following.startswith(_MEASURED):  # ఐదు కిలోమీటర్ల దూరంలో
        many = _oblique(many)
    if frac is None and int(whole) == 1:
        words = f"ఒక {one}"
    else:
        number = decimal_to_words(f"{whole}.{frac}") if frac else number_to_words(int(whole), before_noun=True)
        words = f"{number} {many}"
    # The abbreviation's dot may also have ended the sentence.
    return words + "." if unit.endswith(".") and m.end() == len(m.string) else words


_RULES = [
    # ఉ.10 గంటలకు, సా. 6:30: newspaper shorthand for the part of day
    (re.compile(rf"{_NOT_TEL_BEFORE}({_alternation(_TIME_OF_DAY_ABBREVIATIONS)})\.\s*(?=[0-9])"),
     lambda m: _TIME_OF_DAY_ABBREVIATIONS[m.group(1)] + " "),
    (re.compile(rf"{_NOT_TEL_BEFORE}({_alternation(_WORD_ABBREVIATIONS)})\s*"),
     lambda m: _WORD_ABBREVIATIONS[m.group(1)] + " "),
    # mobile numbers (+91 98480 22338) and landlines (040-23456789), digit by digit
    (re.compile(r"(?<![0-9])(\+91[\s-]?)?[6-9][0-9]{4}[\s-]?[0-9]{5}(?![0-9])"),
     lambda m: phone_to_words(m.group(0))),
    (re.compile(r"(?<![0-9])0[0-9]{2,4}[\s-][0-9]{6,8}(?![0-9])"), lambda m: digits_to_words(m.group(0))),
    # dates: 15/08/2024, 15-08-2024, 15.08.24
    (re.compile(rf"(?<![0-9])([0-9]{{1,2}})([/.-])([0-9]{{1,2}})\2([0-9]{{4}}|[0-9]{{2}})(?![0-9]){_SUFFIX}"),
     _date_match),
    # clock times: 7:30, 19:05, 7:30 pm, 7:30 గంటలకు
    (re.compile(r"(?<![0-9:])([01]?[0-9]|2[0-3]):([0-5][0-9])(?::[0-5][0-9])?(?![0-9])"
                r"(?:\s*([AaPp]\.?[Mm]\.?)(?![A-Za-z]))?"
                rf"(?:\s*(గంటల[{_TEL}]*|గంటలు|గం\.))?{_SUFFIX}"),
     _time_match),
    # money: ₹1,500, ₹ 10.50, Rs. 500/-, రూ.500
    (re.compile(rf"(?:₹|\bRs\.?|\bINR|{_NOT_TEL_BEFORE}రూ\.?)\s*([0-9][0-9,]*)(?:\.([0-9]{{1,2}}))?(?:\s*/-)?{_SUFFIX}"),
     _money_match),
    (re.compile(r"(?<![0-9])([0-9]+)(?:\.([0-9]+))?\s*%"), _percent_match),
    (re.compile(rf"(?<![0-9])([0-9]+)(?:\.([0-9]+))?\s*({_alternation(_UNIT_WORDS)})(?![A-Za-z{_TEL}])"),
     _unit_match),
    # 10-15 రోజులు -> 10 నుంచి 15 రోజులు; the number rule then picks each number's form
    (re.compile(r"(?<![0-9.,:/])([0-9]+)\s?[-–]\s?([0-9]+)(?![0-9.,:/])"), r"\1 నుంచి \2"),
    (re.compile(rf"(?<![0-9A-Za-z{_TEL}])-(?=[0-9])"), "మైనస్ "),
    (re.compile(r"(?<![0-9])([0-9]+)\s+వ(?=\s|$)"), r"\1వ"),  # "5 వ తరగతి" as "5వ తరగతి"
    (re.compile(rf"(?<![0-9])([0-9]+(?:,[0-9]{{2,3}})*)(?:\.([0-9]+))?(?![0-9]){_SUFFIX}"), _number_match),
    # a lone రూ. or unit abbreviation with no number before it
    (re.compile(rf"{_NOT_TEL_BEFORE}రూ\."), "రూపాయలు"),
    (re.compile(rf"{_NOT_TEL_BEFORE}(కి\.మీ\.?|కి\.గ్రా\.?)"), lambda m: _UNIT_WORDS[m.group(1)][1]),
]


def _tidy(text: str) -> str:
    """Whitespace and punctuation the synthesizer reads well: one space between words, none before
    , . ? !, one after; । as a full stop; no repeated marks except the three-dot ellipsis."""
    text = text.replace("…", "...").replace("।", ".").replace("॥", ".")
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([,.?!;:])", r"\1", text)
    text = re.sub(r"([!?,;:])\1+", r"\1", text)
    text = re.sub(r"\.{2,}", "...", text)
    text = re.sub(r"([,?!;:])(?=[^\s,.?!;:)\]}\"'”’])", r"\1 ", text)
    text = re.sub(rf"\.(?=[{_TEL}])", ". ", text)
    return text


def normalize_text(text: str) -> str:
    """Telugu text as it is spoken: digits (Telugu ౦-౯ too), times (7:30), dates (15/08/2024), ₹
    amounts, percentages, decimals, units and common abbreviations become words; whitespace and
    punctuation are tidied. Idempotent: normalised text comes back unchanged."""
    text = unicodedata.normalize("NFC", text).translate(_INVISIBLE)
    text = to_ascii_digits(text)
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return _tidy(text)


def asr_text(text: str) -> str:
    """The recogniser's form of a transcript: normalize_text, then only Telugu letters and signs and
    single spaces between words (no punctuation: it is not heard). Training targets, evaluation
    references and the ear's output all pass through here, so CER compares like with like."""
    text = normalize_text(text)
    kept = [ch if "\u0c00" <= ch <= "\u0c7f" else " " for ch in text]
    return " ".join("".join(kept).split())


# --- character error rate ----------------------------------------------------------------------------

def cer_text(text: str) -> str:
    """The form both sides of a CER are compared in: NFC, letters, marks and digits only, single
    spaces (punctuation is not spoken, so neither transcript carries it)."""
    text = unicodedata.normalize("NFC", text).replace("\u200c", "").replace("\u200d", "")
    kept = "".join(c if unicodedata.category(c)[0] in "LMN" else " " for c in text)
    return " ".join(kept.split())


def edit_distance(a, b) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def cer(refs, hyps) -> float:
    """Character error rate over a set: total edits / total reference characters."""
    refs, hyps = [cer_text(r) for r in refs], [cer_text(h) for h in hyps]
    return sum(edit_distance(r, h) for r, h in zip(refs, hyps)) / max(1, sum(len(r) for r in refs))


if __name__ == "__main__":
    # python telugu_text.py "text with 42 and 7:30"   (no argument: normalise stdin line by line)
    if len(sys.argv) > 1:
        print(normalize_text(" ".join(sys.argv[1:])))
    else:
        for line in sys.stdin:
            print(normalize_text(line))
