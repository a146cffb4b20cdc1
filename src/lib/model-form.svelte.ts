// The model picker's source fields, outside the picker: the first-run list of
// real models fills them with one click.
export type SourceKind = 'tiny' | 'hub' | 'url' | 'directory';

export class ModelSourceForm {
  kind = $state<SourceKind>('tiny');
  repo = $state('');
  revision = $state('main');
  subfolder = $state('');
  url = $state('');
  /** Bumped on every fill, so the picker can bring itself into view and focus. */
  filled = $state(0);

  fillHub(repo: string, subfolder = ''): void {
    this.kind = 'hub';
    this.repo = repo;
    this.revision = 'main';
    this.subfolder = subfolder;
    this.filled++;
  }
}
