import { expect } from 'chai';
import { FlotillaError } from '../../shared/errors/error-codes';
import {
  DEFAULT_TOPIC_CONFIG,
  parseTopicConfig,
  topicCollisionKey,
  validatePartitionCount,
  validateReplicationFactor,
  validateTopicConfigs,
  validateTopicName,
} from '../../shared/metadata';

function errorOf(fn: () => unknown): FlotillaError {
  try {
    fn();
  } catch (err) {
    expect(err).to.be.instanceOf(FlotillaError);
    return err as FlotillaError;
  }
  throw new Error('expected a FlotillaError');
}

describe('shared/metadata validation', () => {
  describe('topic names (Kafka rules)', () => {
    it('accepts 1-249 characters of [a-zA-Z0-9._-]', () => {
      for (const ok of ['a', 'orders', 'Orders.v2_final-1', 'x'.repeat(249), '...', '_']) {
        expect(() => validateTopicName(ok), ok).to.not.throw();
      }
    });

    it('rejects empty, too long, "." and "..", and other characters with INVALID_TOPIC_NAME naming the value and rule', () => {
      expect(errorOf(() => validateTopicName('')).name).to.equal('INVALID_TOPIC_NAME');
      const long = errorOf(() => validateTopicName('x'.repeat(250)));
      expect(long.name).to.equal('INVALID_TOPIC_NAME');
      expect(long.message).to.match(/250 characters.*249/);
      expect(errorOf(() => validateTopicName('.')).message).to.match(/"\."/);
      expect(errorOf(() => validateTopicName('..')).name).to.equal('INVALID_TOPIC_NAME');
      const bad = errorOf(() => validateTopicName('my topic'));
      expect(bad.message).to.contain('"my topic"').and.contain('[a-zA-Z0-9._-]');
      expect(errorOf(() => validateTopicName('tópico')).name).to.equal('INVALID_TOPIC_NAME');
      expect(errorOf(() => validateTopicName(42 as unknown as string)).name).to.equal('INVALID_TOPIC_NAME');
    });

    it('"." and "_" collide (they are the same in metric names)', () => {
      expect(topicCollisionKey('a.b')).to.equal(topicCollisionKey('a_b'));
      expect(topicCollisionKey('a.b')).to.not.equal(topicCollisionKey('a-b'));
    });
  });

  it('partition counts are integers 1..10000 (INVALID_PARTITIONS)', () => {
    for (const ok of [1, 10_000]) expect(() => validatePartitionCount(ok)).to.not.throw();
    for (const bad of [0, -1, 10_001, 1.5, NaN, '3']) {
      const err = errorOf(() => validatePartitionCount(bad));
      expect(err.name).to.equal('INVALID_PARTITIONS');
      expect(err.message).to.contain(String(bad)).and.contain('10000');
    }
  });

  it('replication factor is 1..16 and at most the number of unfenced brokers (INVALID_REPLICATION_FACTOR)', () => {
    expect(() => validateReplicationFactor(3, 3)).to.not.throw();
    expect(() => validateReplicationFactor(16, 20)).to.not.throw();
    for (const bad of [0, 17, 2.5]) expect(errorOf(() => validateReplicationFactor(bad, 20)).name).to.equal('INVALID_REPLICATION_FACTOR');
    const tooMany = errorOf(() => validateReplicationFactor(3, 2));
    expect(tooMany.name).to.equal('INVALID_REPLICATION_FACTOR');
    expect(tooMany.message).to.match(/replication factor 3 .*live.*2/);
  });

  describe('topic configs', () => {
    it('accepts every known key at its bounds and returns the typed effective config', () => {
      const config = validateTopicConfigs(
        {
          'min.insync.replicas': '2',
          'retention.ms': '-1',
          'retention.bytes': '-1',
          'cleanup.policy': 'compact',
          'max.message.bytes': String(100 * 1024 * 1024),
          'segment.bytes': String(1024 * 1024),
          'unclean.leader.election.enable': 'true',
          'flush.messages': '1',
          'flush.ms': '1',
          'message.timestamp.type': 'LogAppendTime',
        },
        3,
      );
      expect(config).to.deep.equal({
        minInsyncReplicas: 2,
        retentionMs: -1,
        retentionBytes: -1,
        cleanupPolicy: 'compact',
        maxMessageBytes: 100 * 1024 * 1024,
        segmentBytes: 1024 * 1024,
        uncleanLeaderElectionEnable: true,
        flushMessages: 1,
        flushMs: 1,
        messageTimestampType: 'LogAppendTime',
      });
    });

    it('defaults are Kafka’s', () => {
      expect(DEFAULT_TOPIC_CONFIG).to.include({
        minInsyncReplicas: 1,
        retentionMs: 604_800_000,
        retentionBytes: -1,
        cleanupPolicy: 'delete',
        maxMessageBytes: 1_048_588,
        segmentBytes: 1_073_741_824,
        uncleanLeaderElectionEnable: false,
        messageTimestampType: 'CreateTime',
      });
      expect(parseTopicConfig(new Map([['retention.ms', '5']])).retentionMs).to.equal(5);
    });

    const cases: Array<[string, string, RegExp]> = [
      ['min.insync.replicas', '0', /min\.insync\.replicas="0".*>= 1/],
      ['min.insync.replicas', '4', /min\.insync\.replicas=4 .*replication factor 3/],
      ['retention.ms', '-2', /retention\.ms="-2".*>= -1/],
      ['retention.ms', '1e3', /retention\.ms="1e3"/],
      ['retention.bytes', 'lots', /retention\.bytes="lots"/],
      ['cleanup.policy', 'delete,compact', /one of delete, compact/],
      ['max.message.bytes', '0', /max\.message\.bytes="0"/],
      ['max.message.bytes', String(100 * 1024 * 1024 + 1), /100 MiB/],
      ['segment.bytes', '1048575', /segment\.bytes="1048575".*1 MiB/],
      ['unclean.leader.election.enable', 'yes', /true or false/],
      ['message.timestamp.type', 'logappendtime', /one of CreateTime, LogAppendTime/],
      ['flush.messages', '0', /flush\.messages="0"/],
      ['flush.ms', '-1', /flush\.ms="-1"/],
      ['no.such.key', '1', /unknown topic config "no\.such\.key"/],
    ];
    for (const [key, value, message] of cases) {
      it(`rejects ${key}=${value} with INVALID_CONFIG naming the value and the rule`, () => {
        const err = errorOf(() => validateTopicConfigs({ [key]: value }, 3));
        expect(err.name).to.equal('INVALID_CONFIG');
        expect(err.message).to.match(message);
      });
    }

    it('rejects keys inherited from Object.prototype as unknown', () => {
      expect(errorOf(() => validateTopicConfigs({ toString: '1' }, 1)).name).to.equal('INVALID_CONFIG');
    });
  });
});
