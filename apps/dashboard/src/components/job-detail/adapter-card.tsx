import type { FineTuningJob } from '@lorafleet/contracts';
import { useState } from 'preact/hooks';
import { api } from '../../hooks/session';
import { saveBlob } from '../../lib/download';

const ADAPTER_FILES = [
  { label: 'adapter_config.json', path: 'files/adapter_config.json', name: 'adapter_config.json' },
  {
    label: 'adapter_model.safetensors',
    path: 'files/adapter_model.safetensors',
    name: 'adapter_model.safetensors',
  },
  { label: 'Archive (.tar.gz)', path: 'archive', name: 'adapter.tar.gz' },
] as const;
type AdapterFile = (typeof ADAPTER_FILES)[number];

/**
 * Download buttons for a succeeded job's adapter. A plain link cannot carry the Bearer key,
 * so each file is fetched with it and saved as a blob.
 */
export function AdapterCard({ job }: { job: FineTuningJob }) {
  const [downloading, setDownloading] = useState<string | null>(null);
  const [downloadError, setDownloadError] = useState<string | null>(null);

  const download = async (file: AdapterFile, adapterId: string) => {
    setDownloading(file.label);
    setDownloadError(null);
    try {
      const fallback = file.path === 'archive' ? `${adapterId}.tar.gz` : file.name;
      const { blob, filename } = await api.download(
        `/v1/adapters/${encodeURIComponent(adapterId)}/${file.path}`,
        fallback,
      );
      saveBlob(blob, filename);
    } catch (error) {
      setDownloadError(
        `Download failed: ${error instanceof Error ? error.message : String(error)}`,
      );
    } finally {
      setDownloading(null);
    }
  };

  const adapterId = job.adapter_id;
  return (
    <div class="card">
      <h2>Adapter</h2>
      {adapterId ? (
        <>
          <p>
            Adapter <span class="mono">{adapterId}</span> in Hugging Face PEFT format.
          </p>
          <div class="downloads" role="group" aria-label="Download adapter files">
            {ADAPTER_FILES.map((file) => (
              <button
                key={file.label}
                type="button"
                class="button"
                disabled={downloading !== null}
                onClick={() => void download(file, adapterId)}
              >
                {downloading === file.label ? 'Downloading…' : `Download ${file.label}`}
              </button>
            ))}
          </div>
          {downloadError ? (
            <p class="alert" role="alert">
              {downloadError}
            </p>
          ) : null}
        </>
      ) : (
        <p class="muted">
          {job.status === 'succeeded'
            ? 'This job has no adapter.'
            : 'Downloads appear here when the job succeeds.'}
        </p>
      )}
    </div>
  );
}
