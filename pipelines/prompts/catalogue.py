"""The generator's catalogue: product categories, the aspects reviewers praise or criticise
(each with the keywords that name it and the sentences reviews are written from), brands,
model names, the star-rating phrases, and the rating bands the summaries ask about."""

from __future__ import annotations

from dataclasses import dataclass

# Placeholders: {item} (the product noun), {brand}, {price}, {n} (a small count). Keywords are
# word starts ("durab" finds durable and durability); each aspect's sentences use its own
# keywords and no other aspect's, so text and aspect records agree.


@dataclass(frozen=True)
class Aspect:
    name: str  # as aspect records, scores and the teacher name it
    keywords: tuple[str, ...]  # word starts a reader (or the keyword baseline) spots it by
    liked: str  # short phrase for "features liked best"
    complaint: str  # short phrase for "points of negative feedback"
    praise: tuple[str, ...]
    criticism: tuple[str, ...]


@dataclass(frozen=True)
class Category:
    name: str
    items: tuple[str, ...]  # product nouns that read after "this"
    price_range: tuple[float, float]  # dollars
    aspects: tuple[Aspect, ...]  # every product of the category has these


VALUE = Aspect(
    "value for money",
    ("price", "value", "money", "worth", "overpriced", "penny"),
    "great value for money",
    "overpriced for what it is",
    (
        "For the price, you really cannot beat it.",
        "Excellent value for money.",
        "Worth every penny at ${price}.",
        "Half the price of the big brands and just as good.",
    ),
    (
        "Way overpriced for what you get.",
        "Not worth ${price}, not even close.",
        "Poor value for money.",
        "You can get better for half the price.",
    ),
)

COMMON_ASPECTS = (
    Aspect(
        "customer service",
        ("customer service", "support", "seller", "refund"),
        "helpful customer service",
        "unhelpful customer service",
        (
            "Customer service was quick and friendly when I had a question.",
            "The seller's support team sorted out a problem within a day.",
            "Great customer service, they replaced a faulty part for free.",
            "Support answered my email the same afternoon.",
        ),
        (
            "Customer service never answered my emails.",
            "Support was useless and kept me waiting for {n} days.",
            "The seller refused a refund and stopped replying.",
            "I spent {n} hours on hold with customer service.",
        ),
    ),
    Aspect(
        "delivery",
        ("delivery", "shipping", "arrived", "courier"),
        "fast delivery",
        "slow or botched delivery",
        (
            "Delivery was fast, it arrived in {n} days.",
            "Shipping was quick and the box arrived in perfect condition.",
            "Arrived a day earlier than promised.",
            "Speedy delivery, well boxed.",
        ),
        (
            "Delivery took {n} weeks.",
            "It arrived late and the box was crushed.",
            "Shipping was a mess, the courier left it in the rain.",
            "It arrived with parts missing.",
        ),
    ),
    Aspect(
        "durability",
        (
            "durab",
            "broke",
            "breaks",
            "falling apart",
            "fell apart",
            "wear",
            "worn",
            "held up",
            "holds up",
            "stopped working",
        ),
        "durable, holds up well",
        "breaks or wears out quickly",
        (
            "After {n} months of daily use it has held up perfectly.",
            "Very durable, it survived a few drops without a scratch.",
            "Durable and well made, nothing has worn or come loose.",
            "It holds up to heavy daily use.",
        ),
        (
            "It broke after {n} weeks.",
            "Stopped working after a month.",
            "Started falling apart within {n} weeks.",
            "Parts wear out in no time.",
        ),
    ),
    Aspect(
        "ease of use",
        (
            "easy to use",
            "ease of use",
            "intuitive",
            "confusing",
            "instructions",
            "setup",
            "set up",
        ),
        "easy to use",
        "confusing to use",
        (
            "Really easy to use straight out of the box.",
            "Setup took two minutes and the controls are intuitive.",
            "The instructions are clear and it is easy to use.",
            "Even my parents found it easy to use.",
        ),
        (
            "The controls are confusing and the instructions make no sense.",
            "Setup was a nightmare.",
            "Not easy to use at all, I had to watch {n} videos to figure it out.",
            "Confusing buttons, I still cannot work it out.",
        ),
    ),
)

CATEGORIES: tuple[Category, ...] = (
    Category(
        "audio",
        ("wireless headset", "wireless speaker", "portable radio", "pair of earbuds"),
        (19.0, 149.0),
        (
            Aspect(
                "battery life",
                ("battery", "batteries"),
                "long battery life",
                "short battery life",
                (
                    "The battery easily lasts {n} days between charges.",
                    "Battery life is superb.",
                    "I only need to top up the battery once a week.",
                    "Battery life is even better than advertised.",
                ),
                (
                    "The battery dies after {n} hours.",
                    "Battery life is terrible.",
                    "The battery barely makes it through a morning.",
                    "The battery drains even when it is switched off.",
                ),
            ),
            Aspect(
                "sound quality",
                ("sound", "audio", "bass", "volume"),
                "great sound quality",
                "poor sound quality",
                (
                    "The sound is crisp with deep bass.",
                    "Sound quality is fantastic for something so little.",
                    "Clear audio even at full volume.",
                    "Rich, balanced sound.",
                ),
                (
                    "The sound is tinny and the bass is muddy.",
                    "Audio crackles at anything above half volume.",
                    "Sound quality is flat and lifeless.",
                    "There is a constant hiss in the audio.",
                ),
            ),
            Aspect(
                "connectivity",
                ("bluetooth", "pairing", "pairs with", "connect", "disconnect"),
                "reliable bluetooth connection",
                "bluetooth keeps disconnecting",
                (
                    "Pairs with my phone instantly.",
                    "The bluetooth connection is rock solid, even two rooms away.",
                    "Connects to my laptop and phone without any fuss.",
                    "Never once dropped the connection.",
                ),
                (
                    "The bluetooth connection drops every few minutes.",
                    "Pairing fails half the time.",
                    "It keeps disconnecting from my phone.",
                    "Could not get it to connect to my laptop at all.",
                ),
            ),
            Aspect(
                "charging",
                ("charging", "charger", "cable", "usb"),
                "fast charging",
                "slow or faulty charging",
                (
                    "Charging is quick, full in about an hour.",
                    "USB-C charging is a nice touch.",
                    "Tops up fast from any USB charger.",
                    "The charging cable is long and sturdy.",
                ),
                (
                    "Charging takes forever.",
                    "The charging socket is loose and the cable falls out.",
                    "It stopped charging after {n} weeks.",
                    "It only charges with the original cable.",
                ),
            ),
        ),
    ),
    Category(
        "kitchen",
        ("blender", "coffee maker", "kettle", "toaster", "air fryer"),
        (24.0, 199.0),
        (
            Aspect(
                "noise",
                ("noise", "noisy", "loud", "quiet"),
                "quiet operation",
                "too noisy",
                (
                    "It is surprisingly quiet.",
                    "Quiet enough to use while the baby sleeps.",
                    "Much less noise than my old one.",
                    "Runs quietly, no rattling.",
                ),
                (
                    "It is incredibly loud.",
                    "The noise is unbearable, like a jet engine.",
                    "Far too noisy for early mornings.",
                    "It rattles and whines loudly.",
                ),
            ),
            Aspect(
                "cleaning",
                ("clean", "dishwasher"),
                "easy to clean",
                "hard to clean",
                (
                    "Easy to clean, the parts go in the dishwasher.",
                    "Cleaning takes seconds.",
                    "Wipes clean in no time.",
                    "Nothing gets stuck, so cleaning is painless.",
                ),
                (
                    "A pain to clean, food gets stuck everywhere.",
                    "Impossible to clean properly.",
                    "The parts are not dishwasher safe and cleaning takes ages.",
                    "Gunk builds up in corners you cannot clean.",
                ),
            ),
            Aspect(
                "capacity",
                ("capacity", "servings", "batches", "big enough"),
                "generous capacity",
                "too small capacity",
                (
                    "Plenty of capacity for a family of {n}.",
                    "The large capacity saves me doing two batches.",
                    "Big enough for a week of meal prep.",
                    "Generous capacity for the footprint.",
                ),
                (
                    "The capacity is tiny, barely enough for one.",
                    "Not big enough for more than {n} servings.",
                    "Capacity is much smaller than the listing suggests.",
                    "I have to do three batches because the capacity is so small.",
                ),
            ),
            Aspect(
                "performance",
                ("performance", "power", "underpowered", "heat", "weak"),
                "powerful performance",
                "weak performance",
                (
                    "Powerful motor, it gets the job done in seconds.",
                    "Heats up fast and cooks evenly.",
                    "Performance is excellent, even with tough jobs.",
                    "Plenty of power for everything I throw at it.",
                ),
                (
                    "The motor is weak and struggles with anything tough.",
                    "It takes forever to heat up.",
                    "Performance is underwhelming.",
                    "Underpowered, it barely copes with the basics.",
                ),
            ),
        ),
    ),
    Category(
        "apparel",
        ("rain jacket", "hoodie", "fleece", "t-shirt", "pair of jeans"),
        (15.0, 129.0),
        (
            Aspect(
                "fit",
                ("fit", "sizing", "size", "tight", "baggy"),
                "great fit",
                "poor fit, sizing is off",
                (
                    "Fits perfectly, true to size.",
                    "The fit is spot on.",
                    "Great fit, not too tight and not baggy.",
                    "Sizing is accurate, I ordered my usual size.",
                ),
                (
                    "Runs at least {n} sizes small.",
                    "The fit is awful, tight in the shoulders and baggy at the waist.",
                    "Sizing is way off.",
                    "It does not fit like the size chart says.",
                ),
            ),
            Aspect(
                "comfort",
                ("comfort", "uncomfortable", "itchy", "soft"),
                "very comfortable",
                "uncomfortable",  # not "... to wear": "wear" is a durability keyword
                (
                    "Really comfortable, I could live in it.",
                    "So soft and comfortable.",
                    "Comfortable even on long walks.",
                    "The most comfortable {item} I own.",
                ),
                (
                    "Uncomfortable after an hour.",
                    "Itchy and scratchy against the skin.",
                    "Not comfortable at all, it rubs.",
                    "Stiff and uncomfortable.",
                ),
            ),
            Aspect(
                "material",
                ("material", "fabric", "stitching", "thread"),
                "quality material",
                "cheap, thin material",
                (
                    "The fabric feels premium and thick.",
                    "Quality material with neat stitching.",
                    "The material is thick and well finished.",
                    "Excellent fabric that has not pilled at all.",
                ),
                (
                    "The fabric is thin and see-through.",
                    "Cheap material that pilled in days.",
                    "Loose threads and sloppy stitching everywhere.",
                    "The material feels like plastic.",
                ),
            ),
            Aspect(
                "colour and style",
                ("colour", "color", "styl", "faded", "fade", "looks"),
                "looks great",
                "colour fades or looks cheap",
                (
                    "The colour is exactly as pictured.",
                    "Looks stylish, I get compliments every time.",
                    "Lovely rich colour that has not faded.",
                    "Great style, very flattering.",
                ),
                (
                    "The colour is nothing like the photos.",
                    "Faded badly within a couple of weeks.",
                    "Looks cheap in person.",
                    "The colour bled onto my other clothes.",
                ),
            ),
        ),
    ),
    Category(
        "beauty",
        ("face cream", "shampoo", "sunscreen", "body lotion", "lip balm"),
        (6.0, 69.0),
        (
            Aspect(
                "scent",
                ("scent", "smell", "fragrance", "perfume"),
                "pleasant scent",
                "unpleasant scent",
                (
                    "Lovely light scent.",
                    "Smells amazing, not overpowering.",
                    "The fragrance is subtle and fresh.",
                    "I love the scent.",
                ),
                (
                    "The smell is overpowering and chemical.",
                    "Smells awful, like cheap perfume.",
                    "The scent gave me a headache.",
                    "Horrible fragrance that lingers all day.",
                ),
            ),
            Aspect(
                "texture",
                ("texture", "greasy", "sticky", "absorb", "consisten"),
                "nice texture",
                "greasy or sticky texture",
                (
                    "Light texture that absorbs quickly.",
                    "Lovely silky texture.",
                    "Not greasy or sticky at all.",
                    "The consistency is just right.",
                ),
                (
                    "Greasy and sticky, it never absorbs.",
                    "The texture is gloopy and clumps.",
                    "Leaves a sticky film.",
                    "Strange watery consistency.",
                ),
            ),
            Aspect(
                "effectiveness",
                ("effective", "results", "difference", "irritat", "breakout"),
                "visible results",
                "no results or irritation",
                (
                    "Noticeable results within a week.",
                    "It made a real difference to my dry skin.",
                    "Very effective, exactly as promised.",
                    "After {n} days I could see results.",
                ),
                (
                    "No difference at all after {n} weeks.",
                    "No visible results whatsoever.",
                    "It caused irritation and redness.",
                    "Gave me breakouts within days.",
                ),
            ),
            Aspect(
                "packaging",
                ("packaging", "pump", "bottle", "tube", "lid", "leak"),
                "practical packaging",
                "leaky or awkward packaging",
                (
                    "The pump dispenses just the right amount.",
                    "Sturdy packaging that travels well.",
                    "The tube is easy to squeeze to the last drop.",
                    "Nice packaging, the lid clicks shut.",
                ),
                (
                    "The pump jams constantly.",
                    "The bottle leaked all over my bag.",
                    "The lid cracked on day one.",
                    "Impossible to get the last third out of the tube.",
                ),
            ),
        ),
    ),
)

ASPECTS: dict[str, Aspect] = {
    a.name: a for a in (VALUE, *COMMON_ASPECTS, *(a for c in CATEGORIES for a in c.aspects))
}
COMMON_PER_PRODUCT = 2  # common aspects a product has besides value for money

BRANDS = (
    "Acme",
    "Nordlys",
    "Kestrel",
    "Volta",
    "Brio",
    "Lumen",
    "Tandem",
    "Orla",
    "Pico",
    "Rowan",
    "Sable",
    "Juniper",
)
MODELS = ("X2", "Pro", "Lite", "Go", "Max", "Air", "One", "Plus", "S", "Mini")

# Star ratings -> openers, titles and closers; none of them mentions an aspect.
TITLES = {
    5: ("Love it", "Exactly what I needed", "Highly recommend", "Five stars"),
    4: ("Very good", "Happy with it", "Solid choice", "Almost perfect"),
    3: ("It's okay", "Mixed feelings", "Average at best", "Does the job, mostly"),
    2: ("Disappointed", "Not great", "Expected better", "Meh"),
    1: ("Avoid", "Terrible", "Returned it", "Do not buy"),
}
OPENERS = {
    5: (
        "Absolutely love this {item}.",
        "Best {item} I have owned.",
        "Really impressed with this {item}.",
    ),
    4: (
        "Pretty happy with this {item} overall.",
        "Good {item} for the most part.",
        "A solid {item}.",
    ),
    3: (
        "This {item} is okay, nothing special.",
        "Mixed feelings about this {item}.",
        "An average {item}.",
    ),
    2: (
        "Not impressed with this {item}.",
        "I expected more from {brand}.",
        "A rather disappointing {item}.",
    ),
    1: (
        "The worst {item} I have ever bought.",
        "Do not buy this {item}.",
        "Save yourself the trouble and skip this {item}.",
    ),
}
CLOSERS = {
    "high": ("Would buy again.", "Recommended.", "Very happy."),
    "mid": ("Might keep it, might not.", "Not sure I would buy it again."),
    "low": ("Returning it.", "Would not recommend.", "Avoid."),
}
# Coarse language (every line trips coarse_language_flag): insults for unhappy reviewers,
# swearing-as-emphasis for happy ones — the flag is about language, not sentiment.
COARSE_NEGATIVE = (
    "What a piece of crap.",
    "Total sh*t, avoid.",
    "Whoever designed this is a complete idiot.",
    "F***ing useless {item}.",
    "This is total bullshit.",
    "Damn thing is a joke.",
    "The people who sell this are morons.",
)
COARSE_POSITIVE = (
    "This {item} is f*cking brilliant.",
    "Damn good {item}.",
    "Holy sh*t, this is good.",
    "Kicks ass.",
)

RATING_BANDS = {"low": (1, 2), "mid": (3, 3), "high": (4, 5)}


def rating_band(rating: int) -> str:
    """low (1-2 stars) | mid (3) | high (4-5): summaries are asked per band."""
    for band, (lo, hi) in RATING_BANDS.items():
        if lo <= rating <= hi:
            return band
    raise ValueError(f"rating {rating!r} is not 1-5 stars")
