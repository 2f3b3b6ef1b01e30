// Replay a recorded LiteSVM session in solana-bankrun (the Agave runtime) and report what happened.
//
// stdin: JSON {programs: [[name, id]], events: [...]}; each program is loaded at genesis from
// $SBF_OUT_DIR/<name>.so (a program deployed by replaying the upgradeable loader's transactions
// hangs bankrun 0.4 at its first invocation after a warp); each event is
//   {kind: "account", key, lamports, owner, data}            an account at genesis (airdrops to
//                                                            fresh keys: setting it later would
//                                                            break bankrun's capitalization check)
//   {kind: "tx", tx, signers, slot, slot_hashes}             warp to `slot`, write the SlotHashes
//                                                            sysvar, re-sign `tx` (base64) with
//                                                            bankrun's blockhash, process it
//   {kind: "read", keys}                                     read accounts
// stdout: JSON list, one entry per "tx"/"read" event: {err, cu, logs, accounts: {key: account|null}}
// Messages keep every byte but the recent blockhash; signatures are made again with `signers`
// (64-byte secret keys, base64).
"use strict";
const { start } = require("solana-bankrun");
const { PublicKey, Keypair, VersionedTransaction } = require("@solana/web3.js");

const SLOT_HASHES = new PublicKey("SysvarS1otHashes111111111111111111111111111");
const SYSVAR_OWNER = new PublicKey("Sysvar1111111111111111111111111111111111111");

function b64(u8) { return Buffer.from(u8).toString("base64"); }

async function readAccounts(client, keys) {
  const out = {};
  for (const k of keys) {
    const a = await client.getAccount(new PublicKey(k));
    out[k] = a === null || a.lamports === 0 ? null :
      { lamports: String(a.lamports), owner: new PublicKey(a.owner).toBase58(), data: b64(a.data),
        executable: a.executable };
  }
  return out;
}

async function main() {
  const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
  const genesis = input.events.filter((ev) => ev.kind === "account").map((ev) => ({
    address: new PublicKey(ev.key),
    info: { lamports: Number(ev.lamports), data: Buffer.from(ev.data, "base64"), owner: new PublicKey(ev.owner),
      executable: false } }));
  const programs = input.programs.map(([name, id]) => ({ name, programId: new PublicKey(id) }));
  const ctx = await start(programs, genesis);
  const client = ctx.banksClient;
  let slot = 0n;
  const results = [];
  for (const ev of input.events) {
    if (ev.kind === "account") {
      continue;
    } else if (ev.kind === "tx") {
      const want = BigInt(ev.slot);
      if (want > slot) { ctx.warpToSlot(want); slot = want; }
      if (ev.slot_hashes !== null) {  // same lamports as the bank's own, or capitalization breaks
        const current = await client.getAccount(SLOT_HASHES);
        ctx.setAccount(SLOT_HASHES, { lamports: Number(current.lamports), data: Buffer.from(ev.slot_hashes, "base64"), owner: SYSVAR_OWNER,
          executable: false });
      }
      const tx = VersionedTransaction.deserialize(Buffer.from(ev.tx, "base64"));
      const [blockhash] = await client.getLatestBlockhash();
      tx.message.recentBlockhash = blockhash;
      tx.sign(ev.signers.map((s) => Keypair.fromSecretKey(Buffer.from(s, "base64"))));
      const res = await client.tryProcessTransaction(tx);
      const keys = tx.message.staticAccountKeys.map((k) => k.toBase58());
      results.push({ err: res.result, cu: res.meta === null ? null : String(res.meta.computeUnitsConsumed),
        logs: res.meta === null ? [] : res.meta.logMessages, accounts: await readAccounts(client, keys) });
    } else if (ev.kind === "read") {
      results.push({ err: null, cu: null, logs: [], accounts: await readAccounts(client, ev.keys) });
    } else {
      throw new Error(`unknown event kind ${ev.kind}`);
    }
  }
  process.stdout.write(JSON.stringify(results));
}

main().catch((e) => { process.stderr.write(String(e && e.stack || e) + "\n"); process.exit(1); });
