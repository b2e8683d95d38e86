"""python-binance, unmodified, against `kuant exchange-sim`: given only the simulator's URL and a
key and secret it accepts, it loads the market, reads klines, tickers and the order book, reads
balances, places market and limit orders, queries, lists and cancels them, and reads its trades.

    python python_binance_client.py URL KEY SECRET
"""
import sys
from decimal import Decimal

from binance.client import Client
from binance.exceptions import BinanceAPIException

url, key, secret = sys.argv[1:4]
# The way python-binance's documentation points it at another endpoint (its testnet): the API URL.
Client.API_URL = url.rstrip("/") + "/api"
client = Client(key, secret)  # pings the server on creation

def check(what, condition, detail=""):
    if not condition:
        raise SystemExit(f"FAILED: {what} {detail}")
    print(f"ok: {what}")

info = client.get_exchange_info()
symbols = {s["symbol"]: s for s in info["symbols"]}
check("exchangeInfo lists BTCUSDT", "BTCUSDT" in symbols)
check("symbol info", client.get_symbol_info("BTCUSDT")["baseAsset"] == "BTC")
check("server time", client.get_server_time()["serverTime"] > 0)

klines = client.get_klines(symbol="BTCUSDT", interval=Client.KLINE_INTERVAL_1HOUR, limit=10)
check("klines", len(klines) >= 1 and float(klines[-1][4]) > 0, klines[-1:])
price = Decimal(client.get_symbol_ticker(symbol="BTCUSDT")["price"])
check("ticker price", price > 0, price)
book_ticker = client.get_orderbook_ticker(symbol="BTCUSDT")
check("book ticker", Decimal(book_ticker["bidPrice"]) < Decimal(book_ticker["askPrice"]), book_ticker)
day = client.get_ticker(symbol="BTCUSDT")
check("24h ticker", Decimal(day["highPrice"]) >= Decimal(day["lowPrice"]), day)
depth = client.get_order_book(symbol="BTCUSDT", limit=5)
check("order book", len(depth["bids"]) == 5 and len(depth["asks"]) == 5)

usdt = Decimal(client.get_asset_balance(asset="USDT")["free"])
check("balance", usdt == Decimal("10000"), usdt)

bought = client.order_market_buy(symbol="BTCUSDT", quantity="0.01", newClientOrderId="pb-market-1")
check("market buy filled", bought["status"] == "FILLED" and len(bought["fills"]) >= 1, bought)

limit_price = f"{(price * Decimal('0.5')).quantize(Decimal('0.01'))}"
resting = client.order_limit_buy(symbol="BTCUSDT", quantity="0.01", price=limit_price, newClientOrderId="pb-limit-1")
check("limit buy rests", resting["status"] == "NEW", resting)
check("query by client id", client.get_order(symbol="BTCUSDT", origClientOrderId="pb-limit-1")["status"] == "NEW")
check("query by order id", client.get_order(symbol="BTCUSDT", orderId=resting["orderId"])["clientOrderId"] == "pb-limit-1")
check("open orders", [o["clientOrderId"] for o in client.get_open_orders(symbol="BTCUSDT")] == ["pb-limit-1"])
locked = Decimal(client.get_asset_balance(asset="USDT")["locked"])
check("limit order's money locked", locked == Decimal(limit_price) * Decimal("0.01"), locked)
cancelled = client.cancel_order(symbol="BTCUSDT", origClientOrderId="pb-limit-1")
check("cancel", cancelled["status"] == "CANCELED", cancelled)
check("no open orders", client.get_open_orders(symbol="BTCUSDT") == [])
check("all orders", len(client.get_all_orders(symbol="BTCUSDT")) == 2)
trades = client.get_my_trades(symbol="BTCUSDT")
check("my trades", len(trades) == len(bought["fills"]) and trades[0]["isBuyer"] is True, trades)
client.create_test_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.01")
check("test order", True)

try:
    client.order_market_sell(symbol="BTCUSDT", quantity="5")
    raise SystemExit("FAILED: a sell beyond the balance was accepted")
except BinanceAPIException as e:
    check("insufficient balance refused as Binance does", e.code == -2010, e)
try:
    client.order_market_buy(symbol="BTCUSDT", quantity="0.000001")
    raise SystemExit("FAILED: an order below the lot size was accepted")
except BinanceAPIException as e:
    check("filter failure refused as Binance does", e.code == -1013, e)

print("python-binance: every call answered as Binance answers it")
