// @solana/web3.js as an independent client of pocv.testing's loopback JSON-RPC server.
// Input (stdin, JSON): {url, job: {address, program, signature}}. Output (stdout, JSON): what
// each call returned; web3.js checks every answer's shape with its own schemas and throws on a
// mismatch, so a wrong shape fails here before Python compares the values.
const web3 = require("@solana/web3.js");

async function confirmed(conn, sig, lastValid) {
  for (let i = 0; i < 2000; i++) {
    const st = (await conn.getSignatureStatuses([sig])).value[0];
    if (st && (st.confirmationStatus === "confirmed" || st.confirmationStatus === "finalized")) return st;
    if (!st && lastValid !== undefined && (await conn.getBlockHeight()) > lastValid) return "expired";
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`no status for ${sig}`);
}

async function main() {
  const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
  const conn = new web3.Connection(input.url, { commitment: "confirmed", disableRetryOnRateLimit: true });
  const out = {};
  out.version = await conn.getVersion();
  out.slot = await conn.getSlot();
  out.blockHeight = await conn.getBlockHeight();
  out.rent165 = await conn.getMinimumBalanceForRentExemption(165);

  const payer = web3.Keypair.generate();
  const drop = await conn.requestAirdrop(payer.publicKey, 2 * web3.LAMPORTS_PER_SOL);
  out.airdrop = (await confirmed(conn, drop)).err;
  out.balance = await conn.getBalance(payer.publicKey);
  const info = await conn.getAccountInfo(payer.publicKey);
  out.payerAccount = { owner: info.owner.toBase58(), lamports: info.lamports, dataLength: info.data.length,
                       executable: info.executable };
  out.missing = await conn.getAccountInfo(web3.Keypair.generate().publicKey);

  // a legacy transfer, skipPreflight: the node answers with the signature
  const to = web3.Keypair.generate();
  let bh = await conn.getLatestBlockhash();
  const legacy = new web3.Transaction({ feePayer: payer.publicKey, blockhash: bh.blockhash,
                                        lastValidBlockHeight: bh.lastValidBlockHeight })
    .add(web3.SystemProgram.transfer({ fromPubkey: payer.publicKey, toPubkey: to.publicKey, lamports: 10_000_000 }));
  legacy.sign(payer);
  const s1 = await conn.sendRawTransaction(legacy.serialize(), { skipPreflight: true });
  out.legacySignature = s1;
  out.legacyLocalSignature = legacy.signature.toString("base64");
  out.legacyStatus = (await confirmed(conn, s1, bh.lastValidBlockHeight)).err;
  const t1 = await conn.getTransaction(s1, { maxSupportedTransactionVersion: 0, commitment: "confirmed" });
  out.legacyTx = { version: t1.version === undefined ? null : t1.version, fee: t1.meta.fee, err: t1.meta.err,
                   pre: t1.meta.preBalances, post: t1.meta.postBalances };

  // a v0 transfer
  bh = await conn.getLatestBlockhash();
  const msg = new web3.TransactionMessage({ payerKey: payer.publicKey, recentBlockhash: bh.blockhash,
    instructions: [web3.SystemProgram.transfer({ fromPubkey: payer.publicKey, toPubkey: to.publicKey,
                                                 lamports: 5_000_000 })] }).compileToV0Message();
  const v0 = new web3.VersionedTransaction(msg);
  v0.sign([payer]);
  const s2 = await conn.sendRawTransaction(v0.serialize(), { skipPreflight: true });
  out.v0Status = (await confirmed(conn, s2, bh.lastValidBlockHeight)).err;
  const t2 = await conn.getTransaction(s2, { maxSupportedTransactionVersion: 0, commitment: "confirmed" });
  out.v0Tx = { version: t2.version, fee: t2.meta.fee, err: t2.meta.err };
  out.toBalance = await conn.getBalance(to.publicKey);

  // a transaction that executes and fails: it lands, pays its fee, and its error comes back
  bh = await conn.getLatestBlockhash();
  const failing = new web3.Transaction({ feePayer: payer.publicKey, blockhash: bh.blockhash,
                                         lastValidBlockHeight: bh.lastValidBlockHeight })
    .add(web3.SystemProgram.transfer({ fromPubkey: to.publicKey, toPubkey: payer.publicKey,
                                       lamports: 100 * web3.LAMPORTS_PER_SOL }));
  failing.sign(payer, to);
  // with preflight the node refuses it, with the simulation's logs
  try {
    await conn.sendRawTransaction(failing.serialize(), { skipPreflight: false });
    out.preflight = "accepted";
  } catch (e) {
    out.preflight = { name: e.constructor.name, logs: e.logs || null, message: String(e.message).slice(0, 200) };
  }
  const s3 = await conn.sendRawTransaction(failing.serialize(), { skipPreflight: true });
  out.failedStatus = (await confirmed(conn, s3, bh.lastValidBlockHeight)).err;
  const t3 = await conn.getTransaction(s3, { maxSupportedTransactionVersion: 0, commitment: "confirmed" });
  out.failedTx = { fee: t3.meta.fee, err: t3.meta.err };

  // an expired blockhash: the signature comes back, no status ever, the block height passes the limit
  const old = bh;
  bh = await conn.getLatestBlockhash();
  const stale = new web3.Transaction({ feePayer: payer.publicKey, blockhash: old.blockhash,
                                       lastValidBlockHeight: old.lastValidBlockHeight })
    .add(web3.SystemProgram.transfer({ fromPubkey: payer.publicKey, toPubkey: to.publicKey, lamports: 1 }));
  stale.sign(payer);
  const s4 = await conn.sendRawTransaction(stale.serialize(), { skipPreflight: true });
  out.expired = await confirmed(conn, s4, old.lastValidBlockHeight);
  out.expiredTx = await conn.getTransaction(s4, { maxSupportedTransactionVersion: 0, commitment: "confirmed" });

  const sigs = await conn.getSignaturesForAddress(payer.publicKey, { limit: 10 });
  out.signatures = sigs.map((s) => ({ signature: s.signature, err: s.err }));
  out.sent = [s1, s2, s3, s4];

  // the job program's accounts and transactions, sent by pocv (Python)
  const job = await conn.getAccountInfo(new web3.PublicKey(input.job.address));
  out.job = { owner: job.owner.toBase58(), dataLength: job.data.length, kind: job.data[0], state: job.data[1] };
  const post = await conn.getTransaction(input.job.signature, { maxSupportedTransactionVersion: 0,
                                                                commitment: "confirmed" });
  out.post = { version: post.version, logs: post.meta.logMessages, err: post.meta.err,
               units: post.meta.computeUnitsConsumed,
               preToken: post.meta.preTokenBalances.length, postToken: post.meta.postTokenBalances.length };
  process.stdout.write(JSON.stringify(out));
}

main().catch((e) => { process.stderr.write(String(e && e.stack || e)); process.exit(1); });
