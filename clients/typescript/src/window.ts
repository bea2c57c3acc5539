/** The last `capacity` ids seen, for membership tests (oldest forgotten first). */
export class IdWindow {
  private readonly ids = new Set<string>();

  /** A window of at most `capacity` ids; 0 remembers none. */
  constructor(private readonly capacity: number) {}

  /** Whether `id` is among the remembered ids. */
  has(id: string): boolean {
    return this.ids.has(id);
  }

  /** Remembers `id` as the newest, forgetting the oldest beyond the capacity. */
  add(id: string): void {
    this.ids.delete(id);
    this.ids.add(id);
    for (const oldest of this.ids) {
      if (this.ids.size <= this.capacity) {
        break;
      }
      this.ids.delete(oldest);
    }
  }
}
