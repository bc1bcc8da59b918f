// The IndexedDB calls of the browser backend (evaluated once by idb.py under Pyodide).
//
// They live in JavaScript because an IndexedDB transaction ends as soon as its code awaits
// anything: every request of a commit is issued here in one synchronous call, and Python
// awaits only the promise of the transaction's `complete` event. Values cross as JSON text
// (a structured clone would turn 37.0 into 37 and large integers into BigInt).
//
// Errors reject with an Error whose `name` says what happened: the DOMException's own name
// ("VersionError", "QuotaExceededError", ...), or one of ours: "UpgradeRefused" (the
// database needs creating or upgrading and the caller said not to), "Blocked" (an upgrade
// waits for another page to close the database), "Closed" (the browser closed it).
({
  error(name, message, extra) {
    const e = new Error(message);
    e.name = name;
    return Object.assign(e, extra || {});
  },

  fromEvent(target, fallback) {
    const err = target && target.error;
    return err ? this.error(err.name, err.message) : this.error(fallback, fallback);
  },

  // Open `name` at `version`, creating the missing object stores; resolves to the database.
  open(name, version, stores, upgrade) {
    return new Promise((resolve, reject) => {
      let request;
      try {
        request = indexedDB.open(name, version);
      } catch (e) {
        reject(this.error(e.name || "Error", String(e.message || e)));
        return;
      }
      request.onupgradeneeded = (event) => {
        const db = request.result;
        if (!upgrade) {
          request.transaction.abort();
          reject(this.error("UpgradeRefused", `version ${event.oldVersion} needs an upgrade`,
                            { oldVersion: event.oldVersion }));
          return;
        }
        for (const store of stores) {
          if (!db.objectStoreNames.contains(store)) db.createObjectStore(store);
        }
      };
      let blocked = false;
      request.onblocked = () => {
        blocked = true;
        reject(this.error("Blocked", "another page holds the database open at an older version"));
      };
      request.onsuccess = () => {
        const db = request.result;
        if (blocked) {
          // The caller was told already; the upgrade went through late: let go of it.
          db.close();
          return;
        }
        // Another page wants to upgrade: let it, and fail our later writes clearly.
        db.onversionchange = () => {
          db.close();
          db.swarmClosed = "another page upgraded or deleted the database";
        };
        db.onclose = () => {
          db.swarmClosed = "the browser closed the database (storage cleared or lost)";
        };
        resolve(db);
      };
      request.onerror = (event) => {
        event.preventDefault();
        reject(this.fromEvent(request, "OpenError"));
      };
    });
  },

  // The version a database has now (0 if it does not exist), without upgrading it.
  async version(name) {
    if (indexedDB.databases) {
      const found = (await indexedDB.databases()).find((d) => d.name === name);
      return found ? found.version : 0;
    }
    return 0;
  },

  // Every key and value of the stores, read in one transaction: [[keys, values], ...].
  load(db, stores) {
    return new Promise((resolve, reject) => {
      let tx;
      try {
        tx = db.transaction(stores, "readonly");
      } catch (e) {
        reject(this.error(db.swarmClosed ? "Closed" : e.name, db.swarmClosed || e.message));
        return;
      }
      const out = stores.map((name) => {
        const store = tx.objectStore(name);
        const pair = [null, null];
        store.getAllKeys().onsuccess = (event) => { pair[0] = event.target.result; };
        store.getAll().onsuccess = (event) => { pair[1] = event.target.result; };
        return pair;
      });
      tx.oncomplete = () => resolve(out);
      tx.onabort = () => reject(this.fromEvent(tx, "AbortError"));
    });
  },

  // One readwrite transaction over `names` (comma-separated): `ops` is flat, [store, key,
  // value, ...], where an undefined value deletes the key. Calls `done()` on `complete`,
  // `done(error)` on abort: once, and never before returning (a callback, not a promise: see
  // idb.py).
  commit(db, names, ops, durability, done) {
    const stores = names.split(",");
    let tx;
    try {
      tx = db.transaction(stores, "readwrite", { durability });
    } catch (e) {
      const error = this.error(db.swarmClosed ? "Closed" : e.name, db.swarmClosed || e.message);
      queueMicrotask(() => done(error));
      return;
    }
    let thrown = null;
    tx.oncomplete = () => done();
    tx.onabort = () =>
      done(thrown ? this.error(thrown.name, thrown.message) : this.fromEvent(tx, "AbortError"));
    try {
      const handles = {};
      for (const name of stores) handles[name] = tx.objectStore(name);
      for (let i = 0; i < ops.length; i += 3) {
        const value = ops[i + 2];
        if (value === undefined) handles[ops[i]].delete(ops[i + 1]);
        else handles[ops[i]].put(value, ops[i + 1]);
      }
    } catch (e) {
      thrown = e;
      tx.abort();
    }
  },

  close(db) {
    db.close();
  },

  deleteDatabase(name) {
    return new Promise((resolve, reject) => {
      const request = indexedDB.deleteDatabase(name);
      request.onsuccess = () => resolve();
      request.onerror = () => reject(this.fromEvent(request, "DeleteError"));
      request.onblocked = () => reject(this.error("Blocked", "the database is open in another page"));
    });
  },

  // Hold the Web Lock `name` until the returned function is called (it returns a promise
  // settled once the lock is free again); undefined if another page or worker holds it; a
  // function that does nothing where the browser has no Web Locks.
  lock(name) {
    if (!(globalThis.navigator && navigator.locks)) return Promise.resolve(async () => {});
    return new Promise((resolve, reject) => {
      const held = navigator.locks.request(name, { ifAvailable: true }, (lock) => {
        if (!lock) {
          resolve(undefined);
          return undefined;
        }
        return new Promise((release) =>
          resolve(() => {
            release();
            return held;
          }));
      });
      held.catch(reject);
    });
  },

  // Whether the origin's storage is persistent already (no prompt); undefined if unknown.
  // (Python meets undefined as None; null would arrive as Pyodide's JsNull.)
  async persisted() {
    const sm = globalThis.navigator && navigator.storage;
    return sm && sm.persisted ? await sm.persisted() : undefined;
  },

  // Ask for persistent storage (may prompt the user in some browsers); undefined if unknown.
  async persist() {
    const sm = globalThis.navigator && navigator.storage;
    return sm && sm.persist ? await sm.persist() : undefined;
  },
})
