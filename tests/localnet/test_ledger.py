"""The ledger file in-process: everything a restart must keep, and refusal of files that are not ledgers."""

import pytest
from solders.keypair import Keypair
from solders.signature import Signature

from localnet import ledger
from localnet.errors import RpcError, error_to_ui
from localnet.state import LocalChain
from tests.localnet.helpers import SOL, ChainKit, pay


@pytest.fixture
def kit():
    return ChainKit(LocalChain())


def restart(chain: LocalChain, path) -> LocalChain:
    ledger.save(chain, path)
    return ledger.load_or_create(path)


def test_a_restored_chain_has_the_same_balances_supply_slot_and_statuses(kit, tmp_path):
    chain = kit.chain
    owner, recipient = Keypair().pubkey(), Keypair().pubkey()
    minted = kit.send(kit.create_ata(owner), kit.mint_to(owner, 2_010_000_000))
    paid = kit.send(pay(kit.payer, recipient, 777))
    failed = kit.send(pay(kit.payer, recipient, 1_000 * SOL), preflight=False)
    for _ in range(7):
        chain.advance_slot()
    payer_balance = chain.get_balance(kit.payer.pubkey())

    restored = restart(chain, tmp_path / "ledger.bin")

    kit.chain = restored
    assert kit.token_balance(owner) == 2_010_000_000
    assert kit.supply() == 2_010_000_000
    assert restored.get_balance(recipient) == 777
    assert restored.get_balance(kit.payer.pubkey()) == payer_balance
    assert (restored.slot, restored.block_height, restored.blockhash) == (
        chain.slot,
        chain.block_height,
        chain.blockhash,
    )
    assert restored.transaction_count == chain.transaction_count
    statuses = restored.signature_statuses(
        [bytes(Signature.from_string(s)) for s in (minted, paid, failed)], search_history=True
    )
    assert [error_to_ui(err) for _, err in statuses] == [None, None, {"InstructionError": [0, {"Custom": 1}]}]
    record = restored.transaction(bytes(Signature.from_string(minted)))
    assert record.logs == chain.transaction(bytes(Signature.from_string(minted))).logs
    assert restored.accounts == {pubkey for pubkey, _ in chain.persistent_accounts()}


def test_a_restored_chain_still_rejects_replays_and_accepts_recent_blockhashes(kit, tmp_path):
    chain = kit.chain
    recipient = Keypair().pubkey()
    landed = kit.tx(pay(kit.payer, recipient, 5))
    chain.send_transaction(landed, bytes(landed))
    pending = kit.tx(pay(kit.payer, recipient, 6))  # signed before the restart, sent after it
    chain.advance_slot()

    restored = restart(chain, tmp_path / "ledger.bin")

    with pytest.raises(RpcError) as excinfo:
        restored.send_transaction(landed, bytes(landed))
    assert '"err":"AlreadyProcessed"' in excinfo.value.data_json
    restored.send_transaction(pending, bytes(pending))
    assert restored.get_balance(recipient) == 11
    restored.advance_slot()
    assert restored.latest_blockhash()[0] != chain.blockhash


def test_a_restored_chain_keeps_saving_what_it_learns(kit, tmp_path):
    path = tmp_path / "ledger.bin"
    restored = restart(kit.chain, path)
    kit.chain = restored
    recipient = Keypair().pubkey()
    kit.send(pay(kit.payer, recipient, 99))
    again = restart(restored, path)
    assert again.get_balance(recipient) == 99
    assert len(again.history) == len(restored.history)


def test_saving_replaces_the_file_atomically(kit, tmp_path):
    path = tmp_path / "ledger.bin"
    ledger.save(kit.chain, path)
    first = path.read_bytes()
    kit.send(pay(kit.payer, Keypair().pubkey(), 1))
    ledger.save(kit.chain, path)
    assert path.read_bytes() != first
    assert [p.name for p in tmp_path.iterdir()] == ["ledger.bin"]
    assert not kit.chain.dirty


def test_a_missing_ledger_starts_a_fresh_chain(tmp_path):
    chain = ledger.load_or_create(tmp_path / "absent.bin")
    assert chain.slot == 0 and len(chain.history) == 0
    assert ledger.load_or_create(None).slot == 0


def test_a_file_that_is_not_a_ledger_is_refused(tmp_path):
    path = tmp_path / "ledger.bin"
    path.write_bytes(b"not a ledger")
    with pytest.raises(ledger.LedgerError, match="bad header"):
        ledger.read(path)


def test_a_truncated_ledger_is_refused(kit, tmp_path):
    path = tmp_path / "ledger.bin"
    ledger.save(kit.chain, path)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ledger.LedgerError, match=r"truncated|damaged"):
        ledger.read(path)


def test_a_ledger_with_damaged_meta_is_refused(kit, tmp_path):
    path = tmp_path / "ledger.bin"
    snapshot = ledger.capture(kit.chain)
    snapshot.meta = {"slot": 1}
    ledger.write(path, snapshot)
    with pytest.raises(ledger.LedgerError, match="damaged"):
        ledger.load_or_create(path)


def test_a_ledger_with_a_damaged_section_is_refused(kit, tmp_path):
    path = tmp_path / "ledger.bin"
    ledger.save(kit.chain, path)
    data = path.read_bytes()
    start = data.index(b"errors") + len(b"errors") + 8
    path.write_bytes(data[:start] + b"x" + data[start + 1 :])
    with pytest.raises(ledger.LedgerError, match="damaged"):
        ledger.read(path)


def test_return_data_survives_the_ledger(kit, tmp_path):
    chain = kit.chain
    owner = Keypair().pubkey()
    signature = kit.send(kit.create_ata(owner))  # the ATA program reads GetAccountDataSize's return data
    record = chain.transaction(bytes(Signature.from_string(signature)))
    restored = restart(chain, tmp_path / "ledger.bin")
    again = restored.transaction(bytes(Signature.from_string(signature)))
    assert again == record
