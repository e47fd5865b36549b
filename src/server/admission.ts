// Admission control for the server: a request runs once its sequences fit under `maxConcurrentSequences` and the
// KV blocks it may need fit in the pool's budget; until then it waits in a queue, oldest first. A full queue
// refuses at once (429), and so does a request that could never fit (400, KV_BUDGET_EXCEEDED).
import { SeedinferError } from '../errors.js';

/** What a request holds while it runs. */
export interface Claim {
  sequences: number;
  blocks: number;
}

interface Waiter extends Claim {
  admit: (release: () => void) => void;
  refuse: (error: SeedinferError) => void;
}

export class Admission {
  private running = 0;
  private reservedBlocks = 0;
  private readonly queue: Waiter[] = [];
  private closed = false;

  constructor(
    readonly maxSequences: number,
    readonly maxQueued: number,
    /** KV blocks the pool's budget holds (0 until the model is known: `setCapacity`). */
    private capacity = 0,
  ) {}

  get capacityBlocks(): number {
    return this.capacity;
  }

  setCapacity(blocks: number): void {
    this.capacity = blocks;
    this.drain();
  }

  /** Sequences generating now. */
  get active(): number {
    return this.running;
  }

  /** Requests waiting for room. */
  get queued(): number {
    return this.queue.length;
  }

  /**
   * Waits until `claim` fits (oldest request first), then resolves with the function that gives it back. Rejects
   * with `QUEUE_FULL`, `KV_BUDGET_EXCEEDED` (it can never fit), `SHUTTING_DOWN`, or `ABORTED` when `signal` fires
   * while it waits.
   */
  async acquire(claim: Claim, signal?: AbortSignal): Promise<() => void> {
    if (this.closed) throw new SeedinferError('SHUTTING_DOWN', 'the server is shutting down');
    if (claim.sequences > this.maxSequences) {
      throw new SeedinferError('INVALID_OPTION', `n is ${claim.sequences}; this server runs at most ${this.maxSequences} sequences at once`);
    }
    if (claim.blocks > this.capacity) {
      throw new SeedinferError(
        'KV_BUDGET_EXCEEDED',
        `the request may need ${claim.blocks} KV blocks and the cache budget holds ${this.capacity}: shorten the prompt or max_tokens, or raise the budget`,
      );
    }
    if (this.queue.length === 0 && this.fits(claim)) return this.take(claim);
    if (this.queue.length >= this.maxQueued) {
      throw new SeedinferError('QUEUE_FULL', `${this.queue.length} requests are already waiting; retry later`);
    }
    return new Promise<() => void>((admit, refuse) => {
      const waiter: Waiter = { ...claim, admit, refuse };
      this.queue.push(waiter);
      signal?.addEventListener(
        'abort',
        () => {
          const at = this.queue.indexOf(waiter);
          if (at < 0) return;
          this.queue.splice(at, 1);
          refuse(new SeedinferError('ABORTED', 'the request was aborted while it waited'));
          this.drain();
        },
        { once: true },
      );
    });
  }

  /** Refuses new requests and every waiting one (`SHUTTING_DOWN`); running ones finish. */
  close(): void {
    this.closed = true;
    for (const waiter of this.queue.splice(0)) waiter.refuse(new SeedinferError('SHUTTING_DOWN', 'the server is shutting down'));
  }

  get isClosed(): boolean {
    return this.closed;
  }

  private fits(claim: Claim): boolean {
    return this.running + claim.sequences <= this.maxSequences && this.reservedBlocks + claim.blocks <= this.capacity;
  }

  private take(claim: Claim): () => void {
    this.running += claim.sequences;
    this.reservedBlocks += claim.blocks;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.running -= claim.sequences;
      this.reservedBlocks -= claim.blocks;
      this.drain();
    };
  }

  /** Admits waiting requests in order while the oldest fits. */
  private drain(): void {
    while (this.queue.length > 0 && this.fits(this.queue[0])) {
      const next = this.queue.shift() as Waiter;
      next.admit(this.take(next));
    }
  }
}
