"""Transform classes of the example signals: the only Python a product team writes."""

from collections.abc import Mapping
from typing import Any

from usp_feast.transforms import SelectFields, SignalTransform


class SearchTransform(SignalTransform):
    """Normalise free text so "Paris " and "paris" count as one city."""

    def transform(self, event: Mapping[str, Any]) -> dict[str, Any] | None:
        return {
            "query": " ".join(str(event["query"]).split()).lower(),
            "city": str(event["city"]).strip().title(),
            "checkin": event["checkin"],
            "checkout": event["checkout"],
            "guests": int(event["guests"]),
        }


class ViewTransform(SelectFields):
    fields = ("listing_id", "city", "price", "room_type")


class WishlistTransform(SelectFields):
    fields = ("listing_id",)


class BookingTransform(SignalTransform):
    """Keep the booking and its total value, which rankers use more than the nightly price."""

    def transform(self, event: Mapping[str, Any]) -> dict[str, Any] | None:
        nights, price = int(event["nights"]), float(event["price"])
        return {
            "listing_id": int(event["listing_id"]),
            "nights": nights,
            "price": price,
            "total": round(nights * price, 2),
        }
