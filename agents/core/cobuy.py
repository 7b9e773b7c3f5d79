"""Products bought together, learned online from orders: "customers who bought X also bought Y".

:class:`CoPurchases` counts, for every product, the orders it was in and the
other products of those orders.  It learns one order at a time
(:meth:`CoPurchases.learn`) and answers :meth:`CoPurchases.also_bought`, the
cross-sell trigger's question (:mod:`agents.core.triggers`).  Only the items
of one order count as bought together; orders of one customer at different
times do not (the engine keeps no product ids in the history).

Memory is bounded, whatever the traffic:

- at most ``max_products`` products are tracked; a new one pushes out the
  product bought least recently (with its counts);
- per product at most ``2 * top_k`` partners are kept; when a product has
  more, only its ``top_k`` strongest survive (ties: lower product id), so a
  partner that is rarely bought with it can be forgotten and counted afresh.

So counts are exact for products and pairs that stay in memory and lower
bounds otherwise.  Plain Python and deterministic: a model pickles, and the
same orders in the same order give the same model.

>>> from datetime import UTC, datetime
>>> from schemas.records import PurchasedItem
>>> def order(n: int, *skus: str) -> Purchased:
...     return Purchased(event_id=f"o{n}", customer_id="c-1", schema_version=1,
...                      occurred_at=datetime(2026, 3, 1, tzinfo=UTC), order_id=f"o{n}",
...                      items=[PurchasedItem(product_id=s, quantity=1, unit_price=9.0,
...                                           topics=[s.split("-")[0]]) for s in skus],
...                      total=9.0 * len(skus), currency="EUR")
>>> model = CoPurchases()
>>> for n, skus in enumerate([("tent-1", "lamp-2"), ("tent-1", "lamp-2", "mat-3"),
...                           ("tent-1", "mat-3"), ("tent-1", "lamp-2")]):
...     model.learn(order(n, *skus))
>>> model.also_bought("tent-1", 2), model.orders_with("tent-1"), model.topics_of("lamp-2")
([('lamp-2', 3), ('mat-3', 2)], 4, ('lamp',))
"""

from __future__ import annotations

from schemas.records import Purchased


class CoPurchases:
    """Bought-together counts with bounded memory (see the module doc)."""

    def __init__(self, max_products: int = 50_000, top_k: int = 20) -> None:
        if max_products < 1 or top_k < 1:
            raise ValueError("max_products and top_k: need at least 1")
        self.max_products = max_products
        self.top_k = top_k
        #: product -> orders it was in; insertion order is recency (oldest first).
        self._orders: dict[str, int] = {}
        self._partners: dict[str, dict[str, int]] = {}
        self._topics: dict[str, tuple[str, ...]] = {}
        self.orders_learned = 0

    def learn(self, order: Purchased) -> None:
        """Count one order: each of its products, and each pair of different products."""
        products: dict[str, tuple[str, ...]] = {}
        for item in order.items:
            products.setdefault(item.product_id, tuple(item.topics))
        self.orders_learned += 1
        for product, topics in products.items():
            count = self._orders.pop(product, 0)  # re-inserted: now the most recent
            self._orders[product] = count + 1
            if topics:
                self._topics[product] = topics
            partners = self._partners.setdefault(product, {})
            for other in products:
                if other != product:
                    partners[other] = partners.get(other, 0) + 1
            if len(partners) > 2 * self.top_k:
                self._partners[product] = dict(self._strongest(partners, self.top_k))
        while len(self._orders) > self.max_products:
            oldest = next(iter(self._orders))
            del self._orders[oldest]
            self._partners.pop(oldest, None)
            self._topics.pop(oldest, None)

    def also_bought(self, product_id: str, k: int = 5) -> list[tuple[str, int]]:
        """Up to ``k`` products most often in the same order as ``product_id``, with counts."""
        return self._strongest(self._partners.get(product_id, {}), k)

    def orders_with(self, product_id: str) -> int:
        """How many orders ``product_id`` was in (as far as memory reaches)."""
        return self._orders.get(product_id, 0)

    def topics_of(self, product_id: str) -> tuple[str, ...]:
        """The topics the latest order gave ``product_id`` (empty when unknown)."""
        return self._topics.get(product_id, ())

    def __len__(self) -> int:
        return len(self._orders)

    @staticmethod
    def _strongest(partners: dict[str, int], k: int) -> list[tuple[str, int]]:
        return sorted(partners.items(), key=lambda pair: (-pair[1], pair[0]))[:k]
