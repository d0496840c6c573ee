"""The seeded review generator: products in the catalogue's categories, each with aspects of
hidden quality; each review praises or criticises aspects in proportion to its star rating,
some use coarse language, some are posted twice. It also returns the *aspect records* — for
each review, the aspects it praises (+1) or criticises (-1) — which the rule-based teacher
summarises and the evaluation scores against. Review ``k`` of product ``i`` depends only on
``(seed, i, k)``: same seed, byte-identical output."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from pipelines.prompts.catalogue import (
    ASPECTS,
    BRANDS,
    CATEGORIES,
    CLOSERS,
    COARSE_NEGATIVE,
    COARSE_POSITIVE,
    COMMON_ASPECTS,
    COMMON_PER_PRODUCT,
    MODELS,
    OPENERS,
    TITLES,
    VALUE,
    rating_band,
)
from pipelines.prompts.schema import ReviewsConfig

_NEAR_DUPLICATE_EDITS = ("append", "lower", "exclaim", "update")

# (criticisms, praises) a review of each star rating makes: {count: weight}
_MENTIONS = {
    1: ({1: 3, 2: 4, 3: 3}, {0: 1}),
    2: ({1: 5, 2: 5}, {0: 7, 1: 3}),
    3: ({1: 3, 2: 1}, {1: 3, 2: 1}),
    4: ({0: 6, 1: 4}, {1: 5, 2: 5}),
    5: ({0: 19, 1: 1}, {1: 3, 2: 4, 3: 3}),
}
RATING_SPREAD = 1.2  # stars: std of a product's rating distribution
ANGRY_SHARE = 0.05  # 1-star reviews whatever the product: real ratings are J-shaped
RANT_CRITICISMS = 3  # a 1-star review criticising this many aspects is "especially negative"


@dataclass(frozen=True)
class Product:
    product_id: str
    name: str
    category: str
    item: str
    brand: str
    price: float
    quality: dict[str, float]  # aspect name -> hidden quality in [-1, 1]: the product's aspects


def generate_products(config: ReviewsConfig) -> list[Product]:
    """Products round-robin over the categories; product i depends only on (seed, i)."""
    return [_product(config.seed, i) for i in range(config.n_products)]


def _product(seed: int, index: int) -> Product:
    rng = random.Random(f"{seed}:product:{index}")
    category = CATEGORIES[index % len(CATEGORIES)]
    item, brand, model = rng.choice(category.items), rng.choice(BRANDS), rng.choice(MODELS)
    low, high = category.price_range
    price = math.floor(rng.uniform(low, high)) + 0.99
    commons = rng.sample(COMMON_ASPECTS, COMMON_PER_PRODUCT)
    aspects = [*category.aspects, VALUE, *sorted(commons, key=COMMON_ASPECTS.index)]
    quality = {a.name: round(rng.uniform(-1, 1), 3) for a in aspects}
    # dear products are judged harder on value
    dearness = (price - low) / (high - low)
    quality[VALUE.name] = round(max(-1.0, min(1.0, quality[VALUE.name] - (dearness - 0.5))), 3)
    return Product(
        f"P{seed}-{index:04d}",
        f"{brand} {model} {item}",
        category.name,
        item,
        brand,
        price,
        quality,
    )


def generate_reviews(config: ReviewsConfig) -> tuple[list[dict], list[dict]]:
    """(reviews, aspect_records). Reviews carry the bronze/reviews fields plus the truth
    ``abusive`` (has coarse language) and ``duplicate_of`` (None, or the id it re-posts; an
    exact re-delivery has the same id). Aspect records: review_id, product_id, aspect,
    polarity (+1 praised, -1 criticised), one per (review id, aspect)."""
    reviews: list[dict] = []
    aspects: list[dict] = []
    for product_index, product in enumerate(generate_products(config)):
        rng = random.Random(f"{config.seed}:count:{product_index}")
        count = rng.randint(
            max(1, config.reviews_per_product // 2), max(1, config.reviews_per_product * 3 // 2)
        )
        for k in range(count):
            review, mentions, copies = _review(config, product, product_index, k)
            reviews += [review, *copies]
            # an exact re-delivery shares its original's id, and so its records
            for review_id in dict.fromkeys(r["review_id"] for r in [review, *copies]):
                aspects += [
                    {
                        "review_id": review_id,
                        "product_id": product.product_id,
                        "aspect": name,
                        "polarity": polarity,
                    }
                    for name, polarity in mentions
                ]
    reviews.sort(key=lambda r: (r["reviewed_at"], r["review_id"]))  # stable: copies stay after
    aspects.sort(key=lambda a: (a["review_id"], a["aspect"]))
    return reviews, aspects


def _review(
    config: ReviewsConfig, product: Product, product_index: int, k: int
) -> tuple[dict, list[tuple[str, int]], list[dict]]:
    """(review, [(aspect, polarity)], duplicate copies) for review k of a product."""
    rng = random.Random(f"{config.seed}:review:{product_index}:{k}")
    rating = _draw_rating(product, rng)
    criticised, praised = _pick_aspects(product, rating, rng)
    values = {"item": product.item, "brand": product.brand, "price": f"{product.price:.2f}"}
    abusive = rng.random() < config.abusive_rate
    text = _compose_text(rating, criticised, praised, values, abusive, rng)
    start = datetime.combine(config.start_date, time(), tzinfo=UTC)
    review = {
        "review_id": f"r{config.seed}-{product_index}-{k}",  # short: prompts quote it
        "product_id": product.product_id,
        "product_name": product.name,
        "category": product.category,
        "price": product.price,
        "reviewer_id": f"u{config.seed}-{rng.randrange(max(1, config.n_products * 10)):05d}",
        "rating": rating,
        "title": rng.choice(TITLES[rating]),
        "text": text,
        "reviewed_at": start + timedelta(seconds=rng.randrange(config.span_days * 86400)),
        "source": "generator",
        "origin": f"generator:seed={config.seed}",
        "ingest_error": None,
        "abusive": abusive,
        "duplicate_of": None,
    }
    mentions = [(a, -1) for a in criticised] + [(a, 1) for a in praised]
    copies = []
    if rng.random() < config.duplicate_rate:
        copies.append(dict(review) if rng.random() < 0.5 else _near_duplicate(review, rng))
    return review, mentions, copies


def _draw_rating(product: Product, rng: random.Random) -> int:
    if rng.random() < ANGRY_SHARE:
        return 1
    mean_quality = sum(product.quality.values()) / len(product.quality)
    centre = 4.0 + 2.0 * mean_quality  # stars: better products draw better ratings
    weights = [math.exp(-((r - centre) ** 2) / (2 * RATING_SPREAD**2)) for r in range(1, 6)]
    return rng.choices(range(1, 6), weights)[0]


def _pick_aspects(
    product: Product, rating: int, rng: random.Random
) -> tuple[list[str], list[str]]:
    """Criticised aspects lean to the product's worst, praised ones to its best."""
    n_bad, n_good = (_weighted_count(table, rng) for table in _MENTIONS[rating])
    names = list(product.quality)
    criticised = _weighted_sample(
        names, [math.exp(-2 * product.quality[a]) for a in names], n_bad, rng
    )
    rest = [a for a in names if a not in criticised]
    praised = _weighted_sample(rest, [math.exp(2 * product.quality[a]) for a in rest], n_good, rng)
    return criticised, praised


def _weighted_count(table: dict[int, int], rng: random.Random) -> int:
    return rng.choices(list(table), list(table.values()))[0]


def _weighted_sample(
    items: list[str], weights: list[float], n: int, rng: random.Random
) -> list[str]:
    items, weights, chosen = list(items), list(weights), []
    for _ in range(min(n, len(items))):
        i = rng.choices(range(len(items)), weights)[0]
        chosen.append(items.pop(i))
        weights.pop(i)
    return chosen


def _compose_text(
    rating: int,
    criticised: list[str],
    praised: list[str],
    values: dict,
    abusive: bool,
    rng: random.Random,
) -> str:
    def say(name: str, good: bool) -> str:
        aspect = ASPECTS[name]
        return rng.choice(aspect.praise if good else aspect.criticism).format(
            n=rng.randint(2, 9), **values
        )

    bad = [say(a, False) for a in criticised]
    good = [say(a, True) for a in praised]
    if rating >= 4:  # happy: praise first, then the niggle
        body = good + [_after("My only complaint: ", s) for s in bad[:1]] + bad[1:]
    elif rating == 3:
        body = good + [_after("However, ", s) for s in bad[:1]] + bad[1:]
    else:  # unhappy: complaints first, a grudging plus at the end
        body = bad + [_after("On the plus side, ", s) for s in good[:1]] + good[1:]
    sentences = [rng.choice(OPENERS[rating]).format(**values), *body]
    if rng.random() < 0.5:
        sentences.append(rng.choice(CLOSERS[rating_band(rating)]))
    if abusive:
        pool = COARSE_POSITIVE if rating >= 4 else COARSE_NEGATIVE
        sentences.insert(rng.randint(1, len(sentences)), rng.choice(pool).format(**values))
    return " ".join(sentences)


def _after(connector: str, sentence: str) -> str:
    """connector + sentence, its first letter lowered unless it is "I" or an acronym."""
    first = sentence.split()[0]
    if first == "I" or first.split("-")[0].isupper():
        return connector + sentence
    return connector + sentence[0].lower() + sentence[1:]


def _near_duplicate(review: dict, rng: random.Random) -> dict:
    """The same reviewer posting (nearly) the same review again, a day or three later."""
    edit = rng.choice(_NEAR_DUPLICATE_EDITS)
    text = review["text"]
    text = {
        "append": text + " Still feel the same.",
        "lower": text.lower(),
        "exclaim": text[:-1] + "!" if text.endswith(".") else text + "!",
        "update": "Update: " + text,
    }[edit]
    return {
        **review,
        "review_id": review["review_id"] + "d",
        "text": text,
        "reviewed_at": review["reviewed_at"] + timedelta(days=rng.randint(1, 3)),
        "duplicate_of": review["review_id"],
    }
