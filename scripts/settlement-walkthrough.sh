#!/usr/bin/env bash
# A whole settlement by hand, against a local Stripe-compatible server. Three terminals, from the repo root:
#   1) make localstripe
#   2) STRIPE_API_KEY=sk_test_local STRIPE_API_BASE=http://127.0.0.1:8420 STRIPE_WEBHOOK_SECRET=whsec_local \
#      G4G_RETURN_WINDOW_DAYS=0 make run            # window 0: today's orders are final at once
#   3) bash scripts/settlement-walkthrough.sh
# It registers a platform and a merchant with a donation rule, has the merchant add a card (a SetupIntent the
# service makes, confirmed the way Stripe.js would confirm it in the merchant's browser),
# sends one signed order webhook, runs a settlement (billed and charged through Stripe), sets the CNY rate so the
# collected money enters the pool, and prints the funds and the audit.
set -e
API=${API:-http://127.0.0.1:8000}
TOKEN=$(.venv/bin/g4g create-api-key --role admin --name me)
AUTH="Authorization: Bearer $TOKEN"
PLATFORM=$(curl -s -X POST $API/v1/platforms -H "$AUTH" -H 'content-type: application/json' -d '{"name":"Tmall"}')
PLT=$(echo "$PLATFORM" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
SECRET=$(echo "$PLATFORM" | python3 -c 'import json,sys; print(json.load(sys.stdin)["webhook_secret"])')
MER=$(curl -s -X POST $API/v1/merchants -H "$AUTH" -H 'content-type: application/json' \
  -d "{\"platform_id\":\"$PLT\",\"external_id\":\"shop-88\",\"name\":\"Tea House\",\"country\":\"CN\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
curl -s -X PUT $API/v1/merchants/$MER/donation-rule -H "$AUTH" -H 'content-type: application/json' \
  -d '{"rate_bps":150,"fixed_per_unit":[{"amount":2,"currency":"CNY"}]}' > /dev/null
# localstripe's own webhooks reach us too
curl -s -X POST http://127.0.0.1:8420/_config/webhooks/g4g -H 'content-type: application/json' \
  -d "{\"url\":\"$API/v1/webhooks/stripe\",\"secret\":\"whsec_local\",\"events\":[\"payment_intent.succeeded\",\"payment_intent.payment_failed\"]}" > /dev/null
# The merchant adds its card: a SetupIntent on the customer the service makes for it, confirmed in Stripe (what
# Stripe.js does in the browser), then completed.
SETI=$(curl -s -X POST $API/v1/merchants/$MER/billing/setup-intent -H "$AUTH" | python3 -c 'import json,sys; print(json.load(sys.stdin)["setup_intent_id"])')
curl -s -u sk_test_local: http://127.0.0.1:8420/v1/setup_intents/$SETI/confirm -d payment_method=pm_card_visa > /dev/null
curl -s -X POST $API/v1/merchants/$MER/billing/setup-intent/$SETI/complete -H "$AUTH"; echo
# A signed order webhook, as the platform sends it
.venv/bin/python - "$API" "$PLT" "$SECRET" <<'PY'
import json, sys, uuid
from datetime import UTC, datetime
import httpx
from standardwebhooks.webhooks import Webhook
api, platform, secret = sys.argv[1:]
now = datetime.now(UTC)
body = json.dumps({"type": "order.paid", "timestamp": now.isoformat(), "data": {"order_id": "TM-1001", "merchant_id": "shop-88",
       "currency": "CNY", "placed_at": now.isoformat(), "items": [{"sku": "TEA-01", "quantity": 2, "amount": 12800}]}})
msg_id = f"msg_{uuid.uuid4().hex}"
headers = {"webhook-id": msg_id, "webhook-timestamp": str(int(now.timestamp())),
           "webhook-signature": Webhook(secret).sign(msg_id, now, body), "content-type": "application/json"}
print(httpx.post(f"{api}/v1/webhooks/orders/{platform}", content=body, headers=headers).text)
PY
sleep 1
RUN=$(curl -s -X POST $API/v1/settlement-runs -H "$AUTH" -H 'content-type: application/json' -d '{}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
# The run is a background job (the server's embedded worker runs it): wait until it is done.
until curl -s $API/v1/settlement-runs/$RUN -H "$AUTH" | grep -q '"status":"done"'; do sleep 0.2; done
curl -s $API/v1/settlement-runs/$RUN -H "$AUTH"; echo
curl -s -X PUT $API/v1/fx-rates/CNY -H "$AUTH" -H 'content-type: application/json' -d '{"rate":"0.1385"}'; echo
curl -s $API/v1/funds -H "$AUTH"; echo
.venv/bin/g4g audit | python3 -c 'import json,sys; print("audit ok:", json.load(sys.stdin)["ok"])'
