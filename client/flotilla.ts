import { Admin } from './admin-client';
import { BrokerConnections } from './broker-connections';
import { ClusterMetadata } from './cluster-metadata';
import { FlotillaConfig, ResolvedFlotillaConfig, resolveFlotillaConfig } from './config';
import { Consumer, ConsumerConfig } from './consumer';
import { Producer } from './producer';
import type { ProducerConfig } from './producer-config';

// The entry point (KafkaJS's `Kafka` class): `new Flotilla({ brokers })`, then `.admin()`,
// `.producer({...})`, `.consumer({...})`. Each producer and consumer owns its connections
// and its metadata cache, and closes them on disconnect().

/** Bound on one Metadata call. */
const METADATA_REQUEST_TIMEOUT_MS = 5_000;

export class Flotilla {
  private readonly config: ResolvedFlotillaConfig;

  constructor(config: FlotillaConfig) {
    this.config = resolveFlotillaConfig(config);
  }

  /** A new admin client with its own connections; close() it when done. */
  admin(): Admin {
    return new Admin(this.config);
  }

  /** A new producer (see producer.ts for batching, retries and the QoS presets); connect() it first. */
  producer(config: ProducerConfig = {}): Producer {
    const connections = new BrokerConnections();
    return new Producer(config, {
      bootstrap: this.config.addresses,
      connections,
      metadata: this.metadata(connections),
      random: this.config.random ?? Math.random,
      logger: this.config.logger,
    });
  }

  /** A new consumer for assigned partitions (no groups yet); connect() it, assign(), run(). */
  consumer(config: ConsumerConfig = {}): Consumer {
    const connections = new BrokerConnections();
    return new Consumer(config, { connections, metadata: this.metadata(connections), random: this.config.random ?? Math.random, logger: this.config.logger });
  }

  private metadata(connections: BrokerConnections): ClusterMetadata {
    return new ClusterMetadata({ bootstrap: this.config.addresses, connections, requestTimeoutMs: METADATA_REQUEST_TIMEOUT_MS, logger: this.config.logger });
  }
}
