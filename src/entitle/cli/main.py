"""The `entitle` command line (Typer).

Each command opens one context, runs the services in one transaction and prints; with ``--json``
stdout carries only JSON. Refusals print their code and message on stderr and exit with 1.

The commands are registered below by module and one-line help, and imported when used
(cli/lazy.py): ``entitle --help`` imports none of them, a command only its own business area.
tests/test_cli_lazy.py checks that each help here is the command's own.
"""

from __future__ import annotations

import typer

from entitle.cli.lazy import Lazy, LazyGroup

COMMANDS = (
    Lazy("first-run", "entitle.cli.tenancy:first_run",
         'Set up an empty installation once: an issuer admin, "My organization", the default catalog.'),
    Lazy("redeem", "entitle.cli.keys:redeem",
         "Redeem a license key into an organization's wallet (no rate limit at the console)."),
    Lazy("history", "entitle.cli.history:show_history",
         "Show an organization's history, verify its chain, export it for an auditor, or verify an export offline."),
    Lazy("allocate", "entitle.cli.axis:allocate",
         "Allocate units from the wallet to subscription years, every line or none, in one confirmation. "
         "A short wallet is refused with how many units are missing. Allocating after the grace period "
         "credits the time already past back to the wallet."),
    Lazy("renew", "entitle.cli.axis:renew",
         "Renew: make the current subscription year fully licensed when it is not (in its grace period, "
         "say), then each of the YEARS years after it, every year against its need, from the wallet; all or "
         "nothing, refused with what each year misses when the wallet is short. Says which years it "
         "allocated to."),
    Lazy("deliver", "entitle.cli.webhooks:deliver",
         "Send the webhook deliveries that are due (signed, retried with back-off); once, or with --loop "
         "until stopped (Ctrl-C or SIGTERM). Several may run at once: each delivery is sent by one."),
    Lazy("sweep", "entitle.cli.sweep:sweep",
         "Record the events of the time-driven transitions due by now that no sweep has recorded yet: run "
         "it as often as you like, two at once, or again after one was killed; each transition's event is "
         "recorded once."),
    Lazy("migrate", "entitle.cli.server:migrate", "Bring the database schema up to date (alembic upgrade head)."),
    Lazy("serve", "entitle.cli.server:serve", "Serve the REST API and the web UI."),
    Lazy("admin", "entitle.cli.tenancy:admin_app", "Users: create issuer staff and organization admins."),
    Lazy("org", "entitle.cli.tenancy:org_app", "Organizations (tenants)."),
    Lazy("member", "entitle.cli.tenancy:member_app", "Memberships of users in organizations."),
    Lazy("catalog", "entitle.cli.catalog:catalog_app", "Products and SKUs (the issuer's catalog)."),
    Lazy("keys", "entitle.cli.keys:keys_app", "License keys: mint and cancel (issuer)."),
    Lazy("wallet", "entitle.cli.keys:wallet_app", "An organization's wallet of unallocated units."),
    Lazy("token", "entitle.cli.tenancy:token_app", "API tokens."),
    Lazy("license", "entitle.cli.licensing:license_app", "Signed license files: verify and show (offline)."),
    Lazy("system-file", "entitle.cli.licensing:system_file_app", "System files of offline systems: make and upload."),
    Lazy("ac", "entitle.cli.access_commander:ac_app",
         "Access Commander: installations, devices, Attendance users, licenses, the calculator."),
    Lazy("subscription", "entitle.cli.axis:subscription_app",
         "AXIS subscriptions: start one (fixes its years), show its licensing status."),
    Lazy("axis", "entitle.cli.axis:axis_app",
         "AXIS licensing: products, systems and devices, hardware, upgrades, allocations."),
    Lazy("site", "entitle.cli.my2n:site_app",
         "My2N sites: create, dashboard, migration, CSV import/export, devices, card payment."),
    Lazy("apartment", "entitle.cli.my2n:apartment_app",
         "Apartments of a My2N site, and paying their licenses from the site credit pool."),
    Lazy("voucher", "entitle.cli.my2n:voucher_app",
         "My2N voucher codes: mint a batch (issuer), activate a code into a site's credit pool, show the pool."),
    Lazy("webhook", "entitle.cli.webhooks:webhook_app",
         "Webhook endpoints of an organization: add, list, change, their deliveries and attempts, redelivery, "
         "a test event."),
)


class EntitleGroup(LazyGroup):
    lazy = COMMANDS


app = typer.Typer(cls=EntitleGroup, help="Entitle: license management for devices and device software.",
                  no_args_is_help=True, pretty_exceptions_enable=False)


@app.callback()
def entitle() -> None:
    # Every command is in the registry, none registered on the app itself: the callback makes
    # Typer build the app as a group (of none but the registry's).
    pass


if __name__ == "__main__":
    app()
