/* pocv job program: escrow of one verified-compute job, worker offers and worker statistics.
 *
 * Instructions, accounts and layouts: programs/README.md (the Python client mirrors them in
 * pocv.market.jobprogram). Every account the program reads is checked for its owner and its
 * address before use; every token movement is a CPI to SPL Token (classic) with the job
 * account, a program-derived address, signing for the vault.
 */
#include "sol.h"

/* ---- limits and constants (mirrored in pocv.market.jobprogram) -------------------------- */

#define MAX_ACCOUNTS 12            /* accounts an instruction may name (VERDICT names 9) */
#define MAX_VERIFIERS 4            /* verifiers an offer may accept */
#define MAX_DEADLINE_SLOTS 4320000 /* a verdict deadline at most ~20 days of 400 ms slots ahead */
#define MIN_VERDICT_WINDOW 2       /* slots between the commit and verdict deadlines, at least */

#define KIND_JOB 1
#define KIND_WORKER 2
#define KIND_PAIR 3

#define ST_POSTED 1
#define ST_COMMITTED 2

#define IX_OFFER 0
#define IX_POST 1
#define IX_COMMIT 2
#define IX_VERDICT 3
#define IX_CLAIM 4

/* custom errors (the runtime reports "custom program error: 0x<n>") */
#define E_INSTRUCTION 1
#define E_ACCOUNTS 2
#define E_SIGNER 3
#define E_ADDRESS 4
#define E_OWNER 5
#define E_WRITABLE 6
#define E_STATE 7
#define E_DEADLINE 8
#define E_TOO_EARLY 9
#define E_TERMS 10
#define E_OFFER 11
#define E_MINT 12
#define E_TOKEN_ACCOUNT 13
#define E_BEACON 14
#define E_INITIALIZED 15
#define E_PARTY 16
#define E_RENT 17

#define MINT_SIZE 82
#define TOKEN_ACCOUNT_SIZE 165
#define SLOT_HASH_ENTRY 40

/* TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA, So11111111111111111111111111111111111111112 and
 * SysvarS1otHashes111111111111111111111111111 as little-endian u64 words (tests check them) */
static const SolPubkey TOKEN_ID = {{0x93a165d7e1f6dd06ULL, 0xac79ebce46e1cbd9ULL, 0x91375b5fed85b41cULL,
                                    0xa900ff7e85f58c3aULL}};
static const SolPubkey NATIVE_MINT = {{0x8481abfe57889b06ULL, 0x35c01846637f68fbULL, 0x553beb1adc39c4daULL,
                                       0x0100000000f0a098ULL}};
static const SolPubkey SLOT_HASHES_ID = {{0xaf0a2f1917d5a706ULL, 0x7acc77fbe365f2c6ULL, 0x133bbed029c582daULL,
                                          0x0000002055002d6eULL}};
static const SolPubkey SYSTEM_ID = {{0, 0, 0, 0}};

/* ---- account layouts (8-aligned; account data in the input buffer is 8-aligned) ---------- */

typedef struct {
  uint8_t kind, state, bump, vault_bump, pad[4];
  uint64_t price, bond, commit_deadline, verdict_deadline, commit_slot;
  SolPubkey consumer, worker, verifier, mint, vault;
  uint8_t job_id[32], spec_hash[32], root[32];
} Job; /* 304 bytes */

typedef struct {
  uint8_t kind, bump, active, n_verifiers, pad[4];
  uint64_t price, min_bond, max_bond;
  uint64_t passes, fails, expired, lapsed, value_settled, slashed, bonded, distinct_consumers, created_slot;
  SolPubkey worker, mint;
  uint8_t fingerprint[32], capabilities[32];
  SolPubkey verifiers[MAX_VERIFIERS];
} Worker; /* 360 bytes */

typedef struct {
  uint8_t kind, bump, counted, pad[5];
  SolPubkey worker, consumer;
} Pair; /* 72 bytes */

/* ---- instruction data (8-aligned in the input buffer) ----------------------------------- */

typedef struct {
  uint8_t tag, active, n_verifiers, bump, pad[4];
  uint64_t price, min_bond, max_bond;
  SolPubkey mint;
  uint8_t fingerprint[32], capabilities[32];
  SolPubkey verifiers[MAX_VERIFIERS];
} OfferIx; /* 256 bytes */

typedef struct {
  uint8_t tag, job_bump, vault_bump, pair_bump, pad[4];
  uint64_t price, bond, commit_deadline, verdict_deadline;
  uint8_t job_id[32], spec_hash[32];
  SolPubkey worker, verifier;
} PostIx; /* 168 bytes */

typedef struct {
  uint8_t tag, pad[7];
  uint8_t root[32];
} CommitIx; /* 40 bytes */

typedef struct {
  uint8_t tag, pass, pad[6];
  uint64_t beacon_slot;
  uint8_t verdict_digest[32];
} VerdictIx; /* 48 bytes */

_Static_assert(sizeof(Job) == 304, "Job layout");
_Static_assert(sizeof(Worker) == 360, "Worker layout");
_Static_assert(sizeof(Pair) == 72, "Pair layout");
_Static_assert(sizeof(OfferIx) == 256, "OFFER layout");
_Static_assert(sizeof(PostIx) == 168, "POST layout");
_Static_assert(sizeof(CommitIx) == 40, "COMMIT layout");
_Static_assert(sizeof(VerdictIx) == 48, "VERDICT layout");

/* ---- helpers -------------------------------------------------------------------------- */

static bool key_eq(const SolPubkey *a, const SolPubkey *b) {
  return a->w[0] == b->w[0] && a->w[1] == b->w[1] && a->w[2] == b->w[2] && a->w[3] == b->w[3];
}

static void key_copy(SolPubkey *dst, const SolPubkey *src) {
  dst->w[0] = src->w[0];
  dst->w[1] = src->w[1];
  dst->w[2] = src->w[2];
  dst->w[3] = src->w[3];
}

static void copy32(uint8_t *dst, const uint8_t *src) { key_copy((SolPubkey *)dst, (const SolPubkey *)src); }

static void zero(uint8_t *p, uint64_t n) {
  for (uint64_t i = 0; i < n; i++) p[i] = 0;
}

static bool is_zero(const uint8_t *p, uint64_t n) {
  for (uint64_t i = 0; i < n; i++)
    if (p[i] != 0) return false;
  return true;
}

static void put_u32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_u64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

static uint64_t sat_add(uint64_t a, uint64_t b) { return a + b < a ? (uint64_t)-1 : a + b; }

static uint64_t current_slot(void) {
  SolClock clock;
  sol_get_clock_sysvar(&clock);
  return clock.slot;
}

/* Parse the input buffer into ka (on the heap); returns the count or 0 on a malformed input. */
typedef struct {
  SolAccountInfo *ka;
  uint64_t ka_num;
  const uint8_t *data;
  uint64_t data_len;
  const SolPubkey *program_id;
} Params;

static bool deserialize(const uint8_t *input, Params *p) {
  p->ka_num = *(const uint64_t *)input;
  input += 8;
  if (p->ka_num > MAX_ACCOUNTS) return false;
  for (uint64_t i = 0; i < p->ka_num; i++) {
    SolAccountInfo *a = &p->ka[i];
    uint8_t dup = input[0];
    if (dup != NON_DUP_MARKER) {
      if (dup >= i) return false;
      SolAccountInfo *o = &p->ka[dup];
      a->key = o->key;
      a->lamports = o->lamports;
      a->data_len = o->data_len;
      a->data = o->data;
      a->owner = o->owner;
      a->rent_epoch = o->rent_epoch;
      a->is_signer = o->is_signer;
      a->is_writable = o->is_writable;
      a->executable = o->executable;
      input += 8;
      continue;
    }
    a->is_signer = input[1] != 0;
    a->is_writable = input[2] != 0;
    a->executable = input[3] != 0;
    input += 8;
    a->key = (SolPubkey *)input;
    input += 32;
    a->owner = (SolPubkey *)input;
    input += 32;
    a->lamports = (uint64_t *)input;
    input += 8;
    a->data_len = *(const uint64_t *)input;
    input += 8;
    a->data = (uint8_t *)input;
    input += a->data_len + MAX_PERMITTED_DATA_INCREASE;
    input = (const uint8_t *)(((uint64_t)input + 7) & ~(uint64_t)7);
    a->rent_epoch = *(const uint64_t *)input;
    input += 8;
  }
  p->data_len = *(const uint64_t *)input;
  input += 8;
  p->data = input;
  input += p->data_len;
  p->program_id = (const SolPubkey *)input;
  return true;
}

/* The rent-exempt minimum of an account of `space` bytes: (128 + space) bytes times the
 * lamports per byte-year times the exemption threshold, an f64 read as bits (no floating point
 * here): 2.0 years (Agave 1.18: 3,480 lamports per byte-year) or 1.0 once SIMD-0194 doubled the
 * per-byte rate (Agave 3+: 6,960); any other threshold is refused. Both give the same figure. */
#define F64_ONE 0x3ff0000000000000ULL
#define F64_TWO 0x4000000000000000ULL
static uint64_t rent_exempt(uint64_t space, uint64_t *out) {
  SolRent rent;
  sol_get_rent_sysvar(&rent);
  uint64_t years;
  if (rent.exemption_threshold_f64_bits == F64_TWO)
    years = 2;
  else if (rent.exemption_threshold_f64_bits == F64_ONE)
    years = 1;
  else
    return E_RENT;
  *out = (128 + space) * rent.lamports_per_byte_year * years;
  return 0;
}

/* A CPI passing every account info of this instruction (the runtime picks those it names). */
static uint64_t invoke(const SolInstruction *ix, const Params *p, const SolSignerSeeds *signers, int n_signers) {
  return sol_invoke_signed_c(ix, p->ka, (int)p->ka_num, signers, n_signers);
}

typedef struct {
  SolAccountInfo *payer, *target;
  uint64_t space;
  const SolPubkey *owner;
  const SolSignerSeeds *seeds;
} Create;

/* Make `target` a rent-exempt account of `space` bytes owned by this program, signed for by
 * `seeds`. A squatter may have sent lamports to the address before us: then top it up,
 * allocate and assign, instead of CreateAccount (which refuses an address holding lamports). */
__attribute__((noinline)) static uint64_t create_pda(const Create *c, const Params *p) {
  SolAccountInfo *payer = c->payer, *target = c->target;
  uint64_t space = c->space;
  if (!key_eq(target->owner, &SYSTEM_ID) || target->data_len != 0) return E_INITIALIZED;
  if (!target->is_writable) return E_WRITABLE;
  uint64_t need;
  uint64_t err = rent_exempt(space, &need);
  if (err) return err;
  SolPubkey system = SYSTEM_ID;
  uint8_t data[52];
  if (*target->lamports == 0) {
    SolAccountMeta metas[2] = {{payer->key, true, true}, {target->key, true, true}};
    put_u32(data, 0); /* SystemInstruction::CreateAccount */
    put_u64(data + 4, need);
    put_u64(data + 12, space);
    copy32(data + 20, (const uint8_t *)c->owner);
    SolInstruction ix = {&system, metas, 2, data, 52};
    return invoke(&ix, p, c->seeds, 1);
  }
  if (*target->lamports < need) {
    SolAccountMeta metas[2] = {{payer->key, true, true}, {target->key, true, false}};
    put_u32(data, 2); /* Transfer */
    put_u64(data + 4, need - *target->lamports);
    SolInstruction ix = {&system, metas, 2, data, 12};
    err = invoke(&ix, p, NULL, 0);
    if (err) return err;
  }
  SolAccountMeta meta[1] = {{target->key, true, true}};
  put_u32(data, 8); /* Allocate */
  put_u64(data + 4, space);
  SolInstruction ix = {&system, meta, 1, data, 12};
  err = invoke(&ix, p, c->seeds, 1);
  if (err) return err;
  put_u32(data, 1); /* Assign */
  copy32(data + 4, (const uint8_t *)c->owner);
  ix.data_len = 36;
  return invoke(&ix, p, c->seeds, 1);
}

/* Move `amount` tokens from the vault to `dest`, then close the vault (its rent to `rent_to`),
 * with the job account signing as the vault's owner. */
typedef struct {
  SolAccountInfo *job_info, *vault, *dest, *rent_to;
} Payout;

__attribute__((noinline)) static uint64_t empty_vault(const Payout *o, const Params *p) {
  SolAccountInfo *job_info = o->job_info, *vault = o->vault, *dest = o->dest, *rent_to = o->rent_to;
  const Job *job = (const Job *)job_info->data;
  SolPubkey token = TOKEN_ID;
  uint8_t bump = job->bump;
  SolSignerSeed seed[4] = {{(const uint8_t *)"job", 3},
                           {(const uint8_t *)&job->consumer, 32},
                           {job->job_id, 32},
                           {&bump, 1}};
  SolSignerSeeds signer = {seed, 4};
  uint64_t amount = get_u64(vault->data + 64);
  uint8_t data[9];
  if (amount > 0) {
    SolAccountMeta metas[3] = {{vault->key, true, false}, {dest->key, true, false}, {job_info->key, false, true}};
    data[0] = 3; /* TokenInstruction::Transfer */
    put_u64(data + 1, amount);
    SolInstruction ix = {&token, metas, 3, data, 9};
    uint64_t err = invoke(&ix, p, &signer, 1);
    if (err) return err;
  }
  SolAccountMeta metas[3] = {{vault->key, true, false}, {rent_to->key, true, false}, {job_info->key, false, true}};
  data[0] = 9; /* CloseAccount */
  SolInstruction ix = {&token, metas, 3, data, 1};
  return invoke(&ix, p, &signer, 1);
}

/* Close a program-owned account: its lamports to `to`, data zeroed, owner back to System. */
static void close_account(SolAccountInfo *acct, SolAccountInfo *to) {
  *to->lamports += *acct->lamports;
  *acct->lamports = 0;
  zero(acct->data, acct->data_len);
  key_copy(acct->owner, &SYSTEM_ID);
}

static uint64_t need_writable(const SolAccountInfo *a) { return a->is_writable ? 0 : E_WRITABLE; }

/* A classic SPL Token account of `mint` whose owner is `party`. */
static uint64_t check_token_account(const SolAccountInfo *a, const SolPubkey *mint, const SolPubkey *party) {
  if (!key_eq(a->owner, &TOKEN_ID)) return E_OWNER;
  if (a->data_len != TOKEN_ACCOUNT_SIZE) return E_TOKEN_ACCOUNT;
  if (!key_eq((const SolPubkey *)a->data, mint) || !key_eq((const SolPubkey *)(a->data + 32), party))
    return E_TOKEN_ACCOUNT;
  return need_writable(a);
}

/* The job account named by `a`, checked: owned by this program, a job, writable. */
static uint64_t load_job(const SolAccountInfo *a, const Params *p, Job **out) {
  if (!key_eq(a->owner, p->program_id)) return E_OWNER;
  if (a->data_len != sizeof(Job) || a->data[0] != KIND_JOB) return E_STATE;
  *out = (Job *)a->data;
  return need_writable(a);
}

static uint64_t load_worker(const SolAccountInfo *a, const Params *p, const SolPubkey *worker, Worker **out) {
  if (!key_eq(a->owner, p->program_id)) return E_OWNER;
  if (a->data_len != sizeof(Worker) || a->data[0] != KIND_WORKER) return E_ADDRESS;
  Worker *w = (Worker *)a->data;
  if (!key_eq(&w->worker, worker)) return E_ADDRESS;
  *out = w;
  return 0;
}

static uint64_t load_pair(const SolAccountInfo *a, const Params *p, const Job *job, Pair **out) {
  if (!key_eq(a->owner, p->program_id)) return E_OWNER;
  if (a->data_len != sizeof(Pair) || a->data[0] != KIND_PAIR) return E_ADDRESS;
  Pair *pr = (Pair *)a->data;
  if (!key_eq(&pr->worker, &job->worker) || !key_eq(&pr->consumer, &job->consumer)) return E_ADDRESS;
  *out = pr;
  return need_writable(a);
}

/* ---- OFFER: create or update the worker's account (offer terms; statistics untouched) ---- */
/* accounts: 0 worker (signer, writable), 1 worker account (writable), 2 System program */
__attribute__((noinline)) static uint64_t offer(const Params *p) {
  if (p->ka_num < 3) return E_ACCOUNTS;
  if (p->data_len != sizeof(OfferIx)) return E_INSTRUCTION;
  const OfferIx *ix = (const OfferIx *)p->data;
  SolAccountInfo *signer = &p->ka[0], *acct = &p->ka[1];
  if (!signer->is_signer) return E_SIGNER;
  if (!key_eq(p->ka[2].key, &SYSTEM_ID)) return E_ADDRESS;
  if (ix->n_verifiers == 0 || ix->n_verifiers > MAX_VERIFIERS || ix->active > 1) return E_TERMS;
  if (ix->min_bond > ix->max_bond || ix->price == 0) return E_TERMS;
  if (key_eq(&ix->mint, &NATIVE_MINT)) return E_MINT;
  for (int i = 0; i < ix->n_verifiers; i++)
    if (key_eq(&ix->verifiers[i], signer->key)) return E_TERMS; /* a worker cannot verify itself */
  for (int i = ix->n_verifiers; i < MAX_VERIFIERS; i++)
    if (!is_zero((const uint8_t *)&ix->verifiers[i], 32)) return E_TERMS;
  Worker *w;
  if (key_eq(acct->owner, p->program_id)) {
    uint64_t err = load_worker(acct, p, signer->key, &w);
    if (err) return err;
    err = need_writable(acct);
    if (err) return err;
  } else {
    /* first offer: the canonical address only, so each worker has one record */
    SolSignerSeed seeds[2] = {{(const uint8_t *)"worker", 6}, {(const uint8_t *)signer->key, 32}};
    SolPubkey expected;
    uint8_t bump;
    if (sol_try_find_program_address(seeds, 2, p->program_id, &expected, &bump) != 0) return E_ADDRESS;
    if (!key_eq(&expected, acct->key) || bump != ix->bump) return E_ADDRESS;
    SolSignerSeed sseeds[3] = {seeds[0], seeds[1], {&bump, 1}};
    SolSignerSeeds signers = {sseeds, 3};
    Create c = {signer, acct, sizeof(Worker), p->program_id, &signers};
    uint64_t err = create_pda(&c, p);
    if (err) return err;
    w = (Worker *)acct->data;
    w->kind = KIND_WORKER;
    w->bump = bump;
    key_copy(&w->worker, signer->key);
    w->created_slot = current_slot();
  }
  w->active = ix->active;
  w->n_verifiers = ix->n_verifiers;
  w->price = ix->price;
  w->min_bond = ix->min_bond;
  w->max_bond = ix->max_bond;
  key_copy(&w->mint, &ix->mint);
  copy32(w->fingerprint, ix->fingerprint);
  copy32(w->capabilities, ix->capabilities);
  for (int i = 0; i < MAX_VERIFIERS; i++) key_copy(&w->verifiers[i], &ix->verifiers[i]);
  SOL_LOG("pocv: OFFER");
  return 0;
}

/* POST, part 2: the vault at ["vault", job, bump], a token account owned by the job account,
 * holding the price */
__attribute__((noinline)) static uint64_t open_vault(const Params *p) {
  const PostIx *ix = (const PostIx *)p->data;
  SolAccountInfo *consumer = &p->ka[0], *job_info = &p->ka[1], *vault = &p->ka[2], *src = &p->ka[3];
  SolAccountInfo *mint = &p->ka[4];
  uint8_t vault_bump = ix->vault_bump;
  SolSignerSeed vseeds[3] = {{(const uint8_t *)"vault", 5}, {(const uint8_t *)job_info->key, 32}, {&vault_bump, 1}};
  SolSignerSeeds vsigner = {vseeds, 3};
  SolPubkey token = TOKEN_ID;
  Create cv = {consumer, vault, TOKEN_ACCOUNT_SIZE, &token, &vsigner};
  uint64_t err = create_pda(&cv, p);
  if (err) return err;
  uint8_t data[33];
  {
    SolAccountMeta metas[2] = {{vault->key, true, false}, {mint->key, false, false}};
    data[0] = 18; /* InitializeAccount3 */
    copy32(data + 1, (const uint8_t *)job_info->key);
    SolInstruction cpi = {&token, metas, 2, data, 33};
    err = invoke(&cpi, p, NULL, 0);
    if (err) return err;
  }
  SolAccountMeta metas[3] = {{src->key, true, false}, {vault->key, true, false}, {consumer->key, false, true}};
  data[0] = 3; /* Transfer, the consumer signing */
  put_u64(data + 1, ix->price);
  SolInstruction cpi = {&token, metas, 3, data, 9};
  return invoke(&cpi, p, NULL, 0);
}

/* POST, part 3: the pair record (worker, consumer), created once at its canonical address */
__attribute__((noinline)) static uint64_t open_pair(const Params *p) {
  const PostIx *ix = (const PostIx *)p->data;
  SolAccountInfo *consumer = &p->ka[0], *pair_info = &p->ka[6];
  if (key_eq(pair_info->owner, p->program_id)) {
    Pair *pr = (Pair *)pair_info->data;
    if (pair_info->data_len != sizeof(Pair) || pr->kind != KIND_PAIR || !key_eq(&pr->worker, &ix->worker) ||
        !key_eq(&pr->consumer, consumer->key))
      return E_ADDRESS;
    return 0;
  }
  SolSignerSeed seeds[3] = {{(const uint8_t *)"pair", 4}, {(const uint8_t *)&ix->worker, 32},
                            {(const uint8_t *)consumer->key, 32}};
  SolPubkey expected;
  uint8_t bump;
  if (sol_try_find_program_address(seeds, 3, p->program_id, &expected, &bump) != 0) return E_ADDRESS;
  if (!key_eq(&expected, pair_info->key) || bump != ix->pair_bump) return E_ADDRESS;
  SolSignerSeed sseeds[4] = {seeds[0], seeds[1], seeds[2], {&bump, 1}};
  SolSignerSeeds signers = {sseeds, 4};
  Create cp = {consumer, pair_info, sizeof(Pair), p->program_id, &signers};
  uint64_t err = create_pda(&cp, p);
  if (err) return err;
  Pair *pr = (Pair *)pair_info->data;
  pr->kind = KIND_PAIR;
  pr->bump = bump;
  key_copy(&pr->worker, &ix->worker);
  key_copy(&pr->consumer, consumer->key);
  return 0;
}

/* ---- POST: the consumer creates the job and its vault and deposits the price ------------- */
/* accounts: 0 consumer (signer, writable), 1 job (writable), 2 vault (writable), 3 consumer's
 * token account (writable), 4 mint, 5 worker account, 6 pair (writable), 7 Token, 8 System */
__attribute__((noinline)) static uint64_t post(const Params *p) {
  if (p->ka_num < 9) return E_ACCOUNTS;
  if (p->data_len != sizeof(PostIx)) return E_INSTRUCTION;
  const PostIx *ix = (const PostIx *)p->data;
  SolAccountInfo *consumer = &p->ka[0], *job_info = &p->ka[1], *vault = &p->ka[2];
  SolAccountInfo *mint = &p->ka[4], *worker_info = &p->ka[5];
  if (!consumer->is_signer) return E_SIGNER;
  if (!key_eq(p->ka[7].key, &TOKEN_ID) || !key_eq(p->ka[8].key, &SYSTEM_ID)) return E_ADDRESS;
  /* terms */
  if (key_eq(consumer->key, &ix->worker) || key_eq(consumer->key, &ix->verifier) ||
      key_eq(&ix->worker, &ix->verifier))
    return E_TERMS;
  if (ix->price == 0 || ix->price + ix->bond < ix->price) return E_TERMS;
  uint64_t now = current_slot();
  if (ix->commit_deadline <= now || ix->verdict_deadline < ix->commit_deadline + MIN_VERDICT_WINDOW ||
      ix->commit_deadline + MIN_VERDICT_WINDOW < ix->commit_deadline || ix->verdict_deadline - now > MAX_DEADLINE_SLOTS)
    return E_TERMS;
  /* the mint: classic SPL Token, initialized, not wrapped SOL */
  if (!key_eq(mint->owner, &TOKEN_ID) || mint->data_len != MINT_SIZE || mint->data[45] != 1) return E_MINT;
  if (key_eq(mint->key, &NATIVE_MINT)) return E_MINT;
  /* the worker's offer accepts these terms */
  Worker *w;
  uint64_t err = load_worker(worker_info, p, &ix->worker, &w);
  if (err) return err;
  if (!w->active || !key_eq(&w->mint, mint->key) || ix->price < w->price || ix->bond < w->min_bond ||
      ix->bond > w->max_bond)
    return E_OFFER;
  bool accepted = false;
  for (int i = 0; i < w->n_verifiers && i < MAX_VERIFIERS; i++) accepted |= key_eq(&w->verifiers[i], &ix->verifier);
  if (!accepted) return E_OFFER;
  /* the job account, at ["job", consumer, job_id, bump] (the CPI's signature proves it) */
  uint8_t job_bump = ix->job_bump;
  SolSignerSeed jseeds[4] = {{(const uint8_t *)"job", 3},
                             {(const uint8_t *)consumer->key, 32},
                             {ix->job_id, 32},
                             {&job_bump, 1}};
  SolSignerSeeds jsigner = {jseeds, 4};
  Create cj = {consumer, job_info, sizeof(Job), p->program_id, &jsigner};
  err = create_pda(&cj, p);
  if (err) return err;
  err = open_vault(p);
  if (err) return err;
  err = open_pair(p);
  if (err) return err;
  Job *job = (Job *)job_info->data;
  job->kind = KIND_JOB;
  job->state = ST_POSTED;
  job->bump = job_bump;
  job->vault_bump = ix->vault_bump;
  job->price = ix->price;
  job->bond = ix->bond;
  job->commit_deadline = ix->commit_deadline;
  job->verdict_deadline = ix->verdict_deadline;
  key_copy(&job->consumer, consumer->key);
  key_copy(&job->worker, &ix->worker);
  key_copy(&job->verifier, &ix->verifier);
  key_copy(&job->mint, mint->key);
  key_copy(&job->vault, vault->key);
  copy32(job->job_id, ix->job_id);
  copy32(job->spec_hash, ix->spec_hash);
  SOL_LOG("pocv: POSTED");
  return 0;
}

/* ---- COMMIT: the named worker bonds and records its root before the commit deadline ------ */
/* accounts: 0 worker (signer), 1 job (writable), 2 vault (writable), 3 worker's token account
 * (writable), 4 Token */
__attribute__((noinline)) static uint64_t commit(const Params *p) {
  if (p->ka_num < 5) return E_ACCOUNTS;
  if (p->data_len != sizeof(CommitIx)) return E_INSTRUCTION;
  const CommitIx *ix = (const CommitIx *)p->data;
  SolAccountInfo *worker = &p->ka[0], *vault = &p->ka[2], *src = &p->ka[3];
  Job *job;
  uint64_t err = load_job(&p->ka[1], p, &job);
  if (err) return err;
  if (!worker->is_signer) return E_SIGNER;
  if (!key_eq(worker->key, &job->worker)) return E_PARTY;
  if (job->state != ST_POSTED) return E_STATE;
  uint64_t now = current_slot();
  if (now > job->commit_deadline) return E_DEADLINE;
  if (!key_eq(vault->key, &job->vault)) return E_ADDRESS;
  if (!key_eq(p->ka[4].key, &TOKEN_ID)) return E_ADDRESS;
  if (job->bond > 0) {
    SolPubkey token = TOKEN_ID;
    SolAccountMeta metas[3] = {{src->key, true, false}, {vault->key, true, false}, {worker->key, false, true}};
    uint8_t data[9];
    data[0] = 3; /* Transfer, the worker signing */
    put_u64(data + 1, job->bond);
    SolInstruction cpi = {&token, metas, 3, data, 9};
    err = invoke(&cpi, p, NULL, 0);
    if (err) return err;
  }
  job->state = ST_COMMITTED;
  job->commit_slot = now;
  copy32(job->root, ix->root);
  SOL_LOG("pocv: COMMITTED");
  return 0;
}

/* Is `slot` in the SlotHashes sysvar (entries newest first, slots strictly decreasing)? */
static bool in_slot_hashes(const SolAccountInfo *sh, uint64_t slot) {
  if (sh->data_len < 8) return false;
  uint64_t n = *(const uint64_t *)sh->data;
  if (n > (sh->data_len - 8) / SLOT_HASH_ENTRY) return false;
  uint64_t lo = 0, hi = n;
  while (lo < hi) {
    uint64_t mid = lo + (hi - lo) / 2;
    uint64_t s = *(const uint64_t *)(sh->data + 8 + mid * SLOT_HASH_ENTRY);
    if (s == slot) return true;
    if (s > slot)
      lo = mid + 1;
    else
      hi = mid;
  }
  return false;
}

/* ---- VERDICT: the named verifier settles; PASS pays the worker, FAIL refunds and slashes -- */
/* accounts: 0 verifier (signer), 1 job (writable), 2 vault (writable), 3 the paid party's token
 * account (writable), 4 consumer (writable: rent), 5 worker account (writable), 6 pair
 * (writable), 7 SlotHashes sysvar, 8 Token */
__attribute__((noinline)) static uint64_t verdict(const Params *p) {
  if (p->ka_num < 9) return E_ACCOUNTS;
  if (p->data_len != sizeof(VerdictIx)) return E_INSTRUCTION;
  const VerdictIx *ix = (const VerdictIx *)p->data;
  SolAccountInfo *verifier = &p->ka[0], *job_info = &p->ka[1], *vault = &p->ka[2], *dest = &p->ka[3];
  SolAccountInfo *consumer = &p->ka[4];
  if (ix->pass > 1) return E_INSTRUCTION;
  Job *job;
  uint64_t err = load_job(job_info, p, &job);
  if (err) return err;
  if (!verifier->is_signer) return E_SIGNER;
  if (!key_eq(verifier->key, &job->verifier)) return E_PARTY;
  if (job->state != ST_COMMITTED) return E_STATE;
  if (current_slot() > job->verdict_deadline) return E_DEADLINE;
  if (!key_eq(vault->key, &job->vault) || !key_eq(consumer->key, &job->consumer)) return E_ADDRESS;
  if (!key_eq(p->ka[7].key, &SLOT_HASHES_ID) || !key_eq(p->ka[8].key, &TOKEN_ID)) return E_ADDRESS;
  err = need_writable(consumer);
  if (err) return err;
  /* the challenge came after the root: its beacon slot follows the commit and is a real slot */
  if (ix->beacon_slot <= job->commit_slot || !in_slot_hashes(&p->ka[7], ix->beacon_slot)) return E_BEACON;
  Worker *w;
  err = load_worker(&p->ka[5], p, &job->worker, &w);
  if (err) return err;
  err = need_writable(&p->ka[5]);
  if (err) return err;
  Pair *pr;
  err = load_pair(&p->ka[6], p, job, &pr);
  if (err) return err;
  err = check_token_account(dest, &job->mint, ix->pass ? &job->worker : &job->consumer);
  if (err) return err;
  Payout out = {job_info, vault, dest, consumer};
  err = empty_vault(&out, p);
  if (err) return err;
  w->bonded = sat_add(w->bonded, job->bond);
  if (ix->pass) {
    w->passes = sat_add(w->passes, 1);
    w->value_settled = sat_add(w->value_settled, job->price);
    if (!pr->counted) {
      pr->counted = 1;
      w->distinct_consumers = sat_add(w->distinct_consumers, 1);
    }
    SOL_LOG("pocv: PASSED");
  } else {
    w->fails = sat_add(w->fails, 1);
    w->slashed = sat_add(w->slashed, job->bond);
    SOL_LOG("pocv: FAILED");
  }
  close_account(job_info, consumer);
  return 0;
}

/* ---- CLAIM: anyone, after a deadline: no commit refunds, no verdict pays the worker ------- */
/* accounts: 0 job (writable), 1 vault (writable), 2 the paid party's token account (writable),
 * 3 consumer (writable: rent), 4 worker account (writable), 5 Token */
__attribute__((noinline)) static uint64_t claim(const Params *p) {
  if (p->ka_num < 6) return E_ACCOUNTS;
  if (p->data_len != 8) return E_INSTRUCTION;
  SolAccountInfo *job_info = &p->ka[0], *vault = &p->ka[1], *dest = &p->ka[2], *consumer = &p->ka[3];
  Job *job;
  uint64_t err = load_job(job_info, p, &job);
  if (err) return err;
  if (!key_eq(vault->key, &job->vault) || !key_eq(consumer->key, &job->consumer)) return E_ADDRESS;
  if (!key_eq(p->ka[5].key, &TOKEN_ID)) return E_ADDRESS;
  err = need_writable(consumer);
  if (err) return err;
  Worker *w;
  err = load_worker(&p->ka[4], p, &job->worker, &w);
  if (err) return err;
  err = need_writable(&p->ka[4]);
  if (err) return err;
  uint64_t now = current_slot();
  bool refund;
  if (job->state == ST_POSTED) {
    if (now <= job->commit_deadline) return E_TOO_EARLY;
    refund = true;
  } else if (job->state == ST_COMMITTED) {
    if (now <= job->verdict_deadline) return E_TOO_EARLY;
    refund = false;
  } else {
    return E_STATE;
  }
  err = check_token_account(dest, &job->mint, refund ? &job->consumer : &job->worker);
  if (err) return err;
  Payout out = {job_info, vault, dest, consumer};
  err = empty_vault(&out, p);
  if (err) return err;
  if (refund) {
    w->lapsed = sat_add(w->lapsed, 1);
    SOL_LOG("pocv: REFUNDED");
  } else {
    w->expired = sat_add(w->expired, 1);
    SOL_LOG("pocv: EXPIRED");
  }
  close_account(job_info, consumer);
  return 0;
}

uint64_t entrypoint(const uint8_t *input) {
  Params p;
  p.ka = (SolAccountInfo *)0x300000000ULL; /* the heap: MAX_ACCOUNTS infos do not fit a 512-byte frame */
  if (!deserialize(input, &p)) return E_ACCOUNTS;
  if (p.data_len < 8) return E_INSTRUCTION;
  switch (p.data[0]) {
    case IX_OFFER:
      return offer(&p);
    case IX_POST:
      return post(&p);
    case IX_COMMIT:
      return commit(&p);
    case IX_VERDICT:
      return verdict(&p);
    case IX_CLAIM:
      return claim(&p);
    default:
      return E_INSTRUCTION;
  }
}
