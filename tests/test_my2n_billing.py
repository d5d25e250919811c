"""Card payments, recurring payment, webhooks and who may pay (R-MY-5, R-MY-6), through the
services with the local payment provider; the Stripe adapter itself is tested against a local
Stripe-like server in test_my2n_payments.py."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from conftest import World
from entitle.actors import Actor, operator
from entitle.clock import add_years
from entitle.db import transaction
from entitle.errors import EntitleError
from entitle.my2n import access, billing
from entitle.my2n import board
from entitle.my2n import services as my2n
from entitle.my2n.models import Apartment, CardPayment, PaymentPlan, WebhookEvent
from entitle.my2n.payments import LocalProvider
from entitle.platform.models import Event
from entitle.tenancy.models import Role
from helpers import history_of, join, org_with_owner

VENDOR = operator("2n-support")


@pytest.fixture
def local(world: World) -> LocalProvider:
    return LocalProvider(webhook_secret="whsec_test", clock=world.ctx.clock)


def refused(error: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> EntitleError:
    with pytest.raises(EntitleError) as exc:
        fn(*args, **kwargs)
    assert exc.value.code == error and exc.value.message
    return exc.value


class Block:
    """The seed's site: 5 apartments, 4 with a phone, one empty (4 need a license)."""

    def __init__(self, world: World, region: str = "EU") -> None:
        self.world = world
        self.org_id, owner = org_with_owner(world, "Residence", "ann@example.com", region=region)
        self.ann = world.actor(owner.user)
        with transaction(world.ctx.sessions) as s:
            site = my2n.create_site(s, org_id=self.org_id, name="Block A", actor=self.ann, now=world.now)
            self.apartments = []
            for i in range(1, 6):
                apt = my2n.create_apartment(s, site=site, name=f"A{i}", actor=self.ann, now=world.now)
                self.apartments.append(apt.id)
                if i < 5:
                    my2n.add_device(s, site=site, serial=f"PHONE-{i}", kind="phone", apartment_id=apt.id,
                                    actor=self.ann, now=world.now)
            self.site_id = site.id

    def run(self, fn: Callable[..., Any], actor: Actor | None = None, **kwargs: Any) -> Any:
        with transaction(self.world.ctx.sessions) as s:
            site = my2n.get_site(s, self.org_id, self.site_id)
            return fn(s, site=site, actor=actor or self.ann, now=self.world.now, **kwargs)

    def paid_through(self) -> dict[str, Any]:
        with self.world.ctx.sessions() as s:
            return {a.name: a.paid_through for a in
                    s.scalars(select(Apartment).where(Apartment.site_id == self.site_id).order_by(Apartment.id))}

    def payments(self) -> int:
        with self.world.ctx.sessions() as s:
            return int(s.scalar(select(func.count()).select_from(CardPayment)) or 0)

    def plan(self) -> PaymentPlan | None:
        with self.world.ctx.sessions() as s:
            return s.scalars(select(PaymentPlan).where(PaymentPlan.site_id == self.site_id)).one_or_none()

    def webhook(self, local: LocalProvider, delivery: tuple[bytes, str]) -> dict[str, Any]:
        with transaction(self.world.ctx.sessions) as s:
            return billing.handle_webhook(s, payload=delivery[0], signature=delivery[1], provider=local,
                                          now=self.world.now)


def test_turning_recurring_payment_on_pays_every_apartment_that_needs_a_license_once(world: World, local) -> None:
    # R-MY-5: card + automatic recurring payment; the first year of the 4 apartments is paid now.
    block = Block(world)
    block.run(billing.set_card, payment_method="pm_card_visa", provider=local)
    done = block.run(billing.activate_recurring, provider=local)
    assert done["apartments_covered"] == 4 and done["paid"] == ["A1", "A2", "A3", "A4"]
    year = add_years(world.now, 1)
    assert block.paid_through() == {"A1": year, "A2": year, "A3": year, "A4": year, "A5": None}
    [(sub_id, sub)] = local.subscriptions.items()
    assert sub.apartments == 4
    # The provider's own invoice.paid webhook for that first year arrives, twice: paid once.
    [first_year] = local.outbox
    assert block.webhook(local, first_year)["outcome"] == "paid"
    assert block.webhook(local, first_year)["outcome"] == "duplicate"
    assert block.paid_through()["A1"] == year and block.payments() == 1


def test_a_renewal_the_provider_charged_on_its_own_pays_the_next_year_once(world: World, local) -> None:
    # R-MY-5: Stripe renews at the anniversary by itself; its invoice.paid (delivered three times)
    # moves the billing year and the apartments on once. No warning while recurring payment renews.
    block = Block(world)
    block.run(billing.set_card, payment_method="pm_card_visa", provider=local)
    block.run(billing.activate_recurring, provider=local)
    year = add_years(world.now, 1)
    world.ctx.clock.advance(timedelta(days=340))  # type: ignore[attr-defined]
    shown = block.run(lambda s, site, actor, now: board.dashboard(s, site=site, now=now))
    assert shown["lapsing_soon"] == [] and shown["lapsed"] == []
    world.ctx.clock.set(year)  # type: ignore[attr-defined]
    renewal = local.renewal_webhook(next(iter(local.subscriptions)))
    for _ in range(3):
        block.webhook(local, renewal)
    assert block.paid_through()["A1"] == add_years(year, 1) and block.payments() == 2
    assert block.plan().period_end == add_years(year, 1)  # type: ignore[union-attr]


def test_a_declined_card_leaves_no_apartment_paid_and_no_credit_taken(world: World, local) -> None:
    # R-MY-5: a payment that fails leaves nothing half-paid.
    block = Block(world)
    block.run(billing.set_card, payment_method="pm_card_0002", provider=local)
    local.declining = True
    error = refused("payment_declined", block.run, billing.activate_recurring, provider=local)
    assert error.status == 402
    assert set(block.paid_through().values()) == {None}
    assert block.payments() == 0 and not block.plan().recurring  # type: ignore[union-attr]
    assert block.run(lambda s, site, actor, now: my2n.credit_pool(s, site)) == {"apartment_years": 0,
                                                                                "device_years": 0}


def test_a_time_out_leaves_nothing_paid_and_the_retry_pays_once(world: World, local) -> None:
    # R-MY-5: unreachable provider → nothing half-paid; the retry reuses the idempotency key.
    block = Block(world)
    block.run(billing.set_card, payment_method="pm_card_visa", provider=local)
    local.timing_out = True
    refused("payment_provider_unreachable", block.run, billing.activate_recurring, provider=local)
    assert set(block.paid_through().values()) == {None} and block.payments() == 0
    local.timing_out = False
    # The provider did the work although our call timed out: the same key returns the same
    # subscription instead of a second charge.
    plan = block.plan()
    assert plan is not None
    local.start_recurring(plan.customer_id or "", site_reference=f"site-{block.site_id}", apartments=4,
                          idempotency_key=f"entitle-site-{block.site_id}-recurring-{plan.version}",
                          renews_at=add_years(world.now, 1), amount_minor=4 * 1200)
    block.run(billing.activate_recurring, provider=local)
    assert len(local.subscriptions) == 1 and block.payments() == 1
    assert block.paid_through()["A1"] == add_years(world.now, 1)


def test_a_payment_whose_answer_was_lost_is_adopted_from_its_webhook(world: World, local) -> None:
    # R-MY-5: the start timed out on our side, the provider's invoice.paid still pays the apartments.
    block = Block(world)
    block.run(billing.set_card, payment_method="pm_card_visa", provider=local)
    plan = block.plan()
    assert plan is not None
    local.start_recurring(plan.customer_id or "", site_reference=f"site-{block.site_id}", apartments=4,
                          idempotency_key="lost-answer")
    [delivery] = local.outbox
    assert block.webhook(local, delivery)["outcome"] == "paid"
    assert block.paid_through()["A4"] == add_years(world.now, 1)
    assert block.plan().recurring  # type: ignore[union-attr]


def test_two_deliveries_of_one_webhook_at_the_same_time_pay_once(world: World, local) -> None:
    # R-MY-5: a webhook delivered twice pays once, even concurrently (PostgreSQL: real concurrency).
    block = Block(world)
    block.run(billing.set_card, payment_method="pm_card_visa", provider=local)
    plan = block.plan()
    assert plan is not None
    local.start_recurring(plan.customer_id or "", site_reference=f"site-{block.site_id}", apartments=4,
                          idempotency_key="k")
    [delivery] = local.outbox
    barrier, outcomes = threading.Barrier(4), []

    def deliver() -> None:
        barrier.wait()
        try:
            outcomes.append(block.webhook(local, delivery)["outcome"])
        except EntitleError as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["duplicate", "duplicate", "duplicate", "paid"]
    assert block.payments() == 1 and block.paid_through()["A1"] == add_years(world.now, 1)


def test_a_webhook_that_does_not_verify_changes_nothing(world: World, local) -> None:
    block = Block(world)
    payload, header = local.make_webhook("payment_succeeded", site_reference=f"site-{block.site_id}",
                                         subscription_id="sub_x", payment_id="in_x", amount_minor=1,
                                         currency="eur", apartments=4)
    refused("webhook_signature_invalid", block.webhook, local, (payload.replace(b"in_x", b"in_y"), header))
    with world.ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(WebhookEvent)) == 0
    assert block.payments() == 0


def test_a_failed_renewal_reported_by_webhook_is_recorded_and_pays_nothing(world: World, local) -> None:
    # R-MY-5, R-MY-6: the provider's invoice.payment_failed is recorded and tells the admins; the
    # apartments work through the retry window after the anniversary, and lapse after it.
    block = Block(world)
    block.run(billing.set_card, payment_method="pm_card_visa", provider=local)
    block.run(billing.activate_recurring, provider=local)
    year = add_years(world.now, 1)
    local.declining = True
    assert block.webhook(local, local.renewal_webhook(next(iter(local.subscriptions))))["outcome"] == "payment_failed"
    assert block.payments() == 1
    assert "my2n.card_payment.failed" in [a for _, a, _ in history_of(world.ctx.engine, block.org_id)]
    with world.ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Event).where(Event.type == "my2n.card_payment.failed")) == 1
    world.ctx.clock.set(year + timedelta(days=7) - timedelta(microseconds=1))  # type: ignore[attr-defined]
    shown = block.run(lambda s, site, actor, now: board.dashboard(s, site=site, now=now))
    assert shown["lapsed"] == [] and shown["lapsing_soon"] == ["A1", "A2", "A3", "A4"]
    world.ctx.clock.set(year + timedelta(days=7))  # type: ignore[attr-defined]
    shown = block.run(lambda s, site, actor, now: board.dashboard(s, site=site, now=now))
    assert shown["lapsed"] == ["A1", "A2", "A3", "A4"]


def test_the_card_changes_only_while_recurring_payment_is_off(world: World, local) -> None:
    # R-MY-5: recurring payment must be deactivated to change the card.
    block = Block(world)
    block.run(billing.set_card, payment_method="pm_card_visa", provider=local)
    block.run(billing.activate_recurring, provider=local)
    refused("recurring_payment_active", block.run, billing.set_card, payment_method="pm_card_mastercard", provider=local)
    refused("recurring_payment_active", block.run, billing.activate_recurring, provider=local)
    block.run(billing.deactivate_recurring, provider=local)
    assert [s.status for s in local.subscriptions.values()] == ["canceled"]
    assert block.run(billing.set_card, payment_method="pm_card_mastercard", provider=local) == {"card": "Mastercard •••• 4444"}
    # Turned on again: a new subscription (new key) in the same billing year, and nothing is
    # charged again for what is paid (issue 14: four cycles used to pay to 2031).
    again = block.run(billing.activate_recurring, provider=local)
    assert again["charged_minor"] == 0 and again["paid"] == []
    assert len(local.subscriptions) == 2 and block.payments() == 1
    assert block.paid_through()["A1"] == add_years(world.now, 1)
    block.run(billing.deactivate_recurring, provider=local)
    # Off already: refused before the provider is called (a provider that would time out).
    refused("recurring_payment_off", block.run, billing.deactivate_recurring, provider=LocalProvider(timing_out=True))


def test_the_provider_cancelling_the_subscription_turns_recurring_payment_off(world: World, local) -> None:
    block = Block(world)
    block.run(billing.set_card, payment_method="pm_card_visa", provider=local)
    block.run(billing.activate_recurring, provider=local)
    sub_id = next(iter(local.subscriptions))
    delivery = local.make_webhook("subscription_cancelled", site_reference=f"site-{block.site_id}",
                                  subscription_id=sub_id, apartments=4)
    assert block.webhook(local, delivery)["outcome"] == "recurring_stopped"
    plan = block.plan()
    assert plan is not None and not plan.recurring and plan.version == 2


def test_nothing_to_pay_and_no_card_are_refused_before_the_provider_is_called(world: World, local) -> None:
    block = Block(world)
    refused("card_missing", block.run, billing.activate_recurring, provider=local)
    org_id, owner = org_with_owner(world, "Empty", "eve@example.com")
    eve = world.actor(owner.user)
    with transaction(world.ctx.sessions) as s:
        site = my2n.create_site(s, org_id=org_id, name="Empty", actor=eve, now=world.now)
        my2n.create_apartment(s, site=site, name="E1", actor=eve, now=world.now)
        billing.set_card(s, site=site, payment_method="pm_card_visa", actor=eve, now=world.now, provider=local)
    with pytest.raises(EntitleError) as exc, transaction(world.ctx.sessions) as s:
        billing.activate_recurring(s, site=my2n.get_site(s, org_id, site.id), actor=eve, now=world.now,
                                   provider=local)
    assert exc.value.code == "nothing_to_pay" and local.subscriptions == {}


def test_a_custom_site_cannot_be_prolonged_by_card_or_credit(world: World, local) -> None:
    # R-MY-1: the retired custom model can be neither prolonged nor paid.
    org_id, owner = org_with_owner(world, "Legacy", "leo@example.com")
    leo = world.actor(owner.user)
    with transaction(world.ctx.sessions) as s:
        site = my2n.create_site(s, org_id=org_id, name="Old", model="custom", actor=VENDOR, now=world.now,
                                custom_expires_at=world.now + timedelta(days=60))
        apt = my2n.create_apartment(s, site=site, name="O1", actor=leo, now=world.now)
        my2n.add_device(s, site=site, serial="P", kind="phone", apartment_id=apt.id, actor=leo, now=world.now)
        billing.set_card(s, site=site, payment_method="pm_card_visa", actor=leo, now=world.now, provider=local)
        site_id, apt_id = site.id, apt.id
    for fn, kwargs in ((billing.activate_recurring, {"provider": local}),
                       (my2n.pay_from_credit, {"apartment_id": apt_id})):
        with pytest.raises(EntitleError) as exc, transaction(world.ctx.sessions) as s:
            fn(s, site=my2n.get_site(s, org_id, site_id), actor=leo, now=world.now, **kwargs)
        assert exc.value.code == "model_retired"


# --- who may pay, see prices, manage (roles) ------------------------------------------------------

def test_only_company_admins_and_site_admins_with_the_payments_permission_pay_or_see_prices(
        world: World, local) -> None:
    # R-MY-5: roles.
    block = Block(world)
    viewer = join(world, block.org_id, "val@example.com", Role.viewer)
    site_admin = join(world, block.org_id, "sam@example.com", Role.viewer)
    payer = join(world, block.org_id, "pat@example.com", Role.viewer)
    block.run(access.grant_site_role, user_id=site_admin.user.id, role="site_admin")
    block.run(access.grant_site_role, user_id=payer.user.id, role="site_admin", payments=True)
    val, sam, pat = (world.actor(m.user) for m in (viewer, site_admin, payer))
    for who in (val, sam):
        refused("payments_permission_required", block.run, billing.set_card, actor=who,
                payment_method="pm_card_visa", provider=local)
        plan = block.run(billing.plan_to_dict, actor=who, price_minor=1200, currency="eur")
        assert "price" not in plan and plan["may_pay"] is False
    for who in (block.ann, pat):
        plan = block.run(billing.plan_to_dict, actor=who, price_minor=1200, currency="eur")
        assert plan["price"] == {"per_apartment_year_minor": 1200, "currency": "EUR", "year_total_minor": 4 * 1200}
    block.run(billing.set_card, actor=pat, payment_method="pm_card_visa", provider=local)
    assert block.run(billing.activate_recurring, actor=pat, provider=local)["apartments_covered"] == 4
    # The site admin without payments still manages apartments; the viewer does not.
    block.run(my2n.create_apartment, actor=sam, name="A6")
    refused("site_admin_required", block.run, my2n.create_apartment, actor=val, name="A7")
    # Only company admins hand out site roles.
    refused("role_insufficient", block.run, access.grant_site_role, actor=pat, user_id=viewer.user.id,
            role="site_admin", payments=True)


def test_an_apartment_admin_adds_devices_to_their_apartment_and_meets_the_same_limit(world: World) -> None:
    # R-MY-2: a fifth paid device is refused whoever adds it, the apartment admin too.
    block = Block(world)
    member = join(world, block.org_id, "aaron@example.com", Role.viewer)
    a1, a2 = block.apartments[0], block.apartments[1]
    block.run(access.grant_site_role, user_id=member.user.id, role="apartment_admin", apartment_id=a1)
    aaron = world.actor(member.user)
    for i in range(3):  # A1 has one phone already
        block.run(my2n.add_device, actor=aaron, serial=f"T-{i}", kind="tablet", apartment_id=a1)
    error = refused("apartment_paid_device_limit", block.run, my2n.add_device, actor=aaron, serial="T-9",
                    kind="tablet", apartment_id=a1)
    assert "create another apartment" in error.message
    refused("apartment_admin_required", block.run, my2n.add_device, actor=aaron, serial="T-8", kind="tablet",
            apartment_id=a2)
    block.run(my2n.set_local_mode, actor=aaron, serial="T-0", local_mode=True)
    refused("apartment_admin_required", block.run, my2n.set_local_mode, actor=aaron, serial="PHONE-2",
            local_mode=True)


def test_voucher_activation_and_paying_from_credit_need_the_payments_permission(world: World) -> None:
    # R-MY-5
    block = Block(world)
    member = join(world, block.org_id, "sam@example.com", Role.viewer)
    block.run(access.grant_site_role, user_id=member.user.id, role="site_admin")
    sam = world.actor(member.user)
    refused("payments_permission_required", block.run, my2n.pay_from_credit, actor=sam,
            apartment_id=block.apartments[0])
    refused("payments_permission_required", block.run, my2n.redeem_voucher, actor=sam, code="XXXX")


def test_site_roles_are_listed_changed_and_revoked(world: World) -> None:
    block = Block(world)
    member = join(world, block.org_id, "sam@example.com", Role.viewer)
    block.run(access.grant_site_role, user_id=member.user.id, role="site_admin")
    block.run(access.grant_site_role, user_id=member.user.id, role="site_admin", payments=True)
    with world.ctx.sessions() as s:
        roles = access.site_roles(s, my2n.get_site(s, block.org_id, block.site_id))
    assert roles == [{"user_id": member.user.id, "role": "site_admin", "apartment_id": None, "payments": True,
                      "email": "sam@example.com"}]
    refused("payments_permission_site_admins_only", block.run, access.grant_site_role, user_id=member.user.id,
            role="apartment_admin", apartment_id=block.apartments[0], payments=True)
    refused("member_not_found", block.run, access.grant_site_role, user_id=10_000, role="site_admin")
    block.run(access.revoke_site_role, user_id=member.user.id)
    refused("site_role_missing", block.run, access.revoke_site_role, user_id=member.user.id)
    actions = [a for _, a, _ in history_of(world.ctx.engine, block.org_id)]
    assert actions.count("my2n.site_role.granted") == 2 and "my2n.site_role.revoked" in actions


# --- the site type after migration (R-MY-4) -------------------------------------------------------

def test_after_the_model_change_the_admin_chooses_the_site_type(world: World) -> None:  # R-MY-4
    org_id, owner = org_with_owner(world, "Legacy", "leo@example.com")
    leo = world.actor(owner.user)
    with transaction(world.ctx.sessions) as s:
        site = my2n.create_site(s, org_id=org_id, name="Old", model="custom", actor=VENDOR, now=world.now,
                                custom_expires_at=world.now + timedelta(days=60))
        assert my2n.site_to_dict(site, world.now)["site_type"] is None
        with pytest.raises(EntitleError) as exc:
            my2n.choose_site_type(s, site=site, site_type="family_house", actor=leo, now=world.now)
        assert exc.value.code == "site_type_needs_apartment_model"
    with transaction(world.ctx.sessions) as s:
        site = my2n.get_site(s, org_id, site.id)
        my2n.change_model(s, site=site, model="apartment", actor=VENDOR, now=world.now)
        assert my2n.site_to_dict(site, world.now)["site_type_required"] is True
        with pytest.raises(EntitleError) as exc:
            my2n.choose_site_type(s, site=site, site_type="castle", actor=leo, now=world.now)
        assert exc.value.code == "site_type_unknown"
        my2n.choose_site_type(s, site=site, site_type="apartment_building", actor=leo, now=world.now)
        shown = my2n.site_to_dict(site, world.now)
    assert (shown["site_type"], shown["site_type_required"]) == ("apartment_building", False)
    assert "my2n.site.type_chosen" in [a for _, a, _ in history_of(world.ctx.engine, org_id)]
